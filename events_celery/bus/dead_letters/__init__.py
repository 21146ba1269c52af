"""The dead-letter path: where an event that cannot run is dead-lettered, and how it comes back.

- :mod:`.store`: the dead-letter table, and the broker's dead-letter queue as its fallback.
- :mod:`.replay`: replaying dead letters through the receiver tasks, or discarding them.
- :mod:`.broker_import`: moving messages left in the broker's dead-letter queues into the
  store.
- :mod:`.health`: the checks ``manage.py event_bus_health`` runs (broker, topology, outbox,
  dead letters) for a container's probe.
"""
