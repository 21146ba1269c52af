"""The bus: the paths an event takes between services, one folder each.

An event is written, published, consumed, run and maybe dead-lettered; each step has its
folder, and a module of one path does not reach into another's internals:

- :mod:`~events_celery.bus.publish`: from ``send_event`` to the broker (producer, batching,
  outbox table, background publisher, relay, direct mode).
- :mod:`~events_celery.bus.consume`: from the service's queues to its receivers (the worker's
  consumer step, the receiver tasks, running one receiver).
- :mod:`~events_celery.bus.dead_letters`: where an event that cannot run is dead-lettered, and
  how it comes back (store, replay, broker import, health).
- :mod:`~events_celery.bus.broker`: the AMQP edge every path shares (connection, topology,
  frames, windowed confirms, the retrying publisher, backoff, per-process resources).
- :mod:`~events_celery.bus.worker`: what a Celery worker runs beside its tasks.
- :mod:`~events_celery.bus.metrics` and :mod:`~events_celery.bus.tracing`: observers that hang
  on named hook points of the paths and import nothing else of the bus.
"""
