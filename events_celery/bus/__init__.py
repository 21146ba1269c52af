"""The event bus: topology, producer, wire format, consumer and dead letters."""
