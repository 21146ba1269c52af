"""The AMQP edge every path shares: what talks to RabbitMQ, and nothing about events' paths.

- :mod:`.connection`: the bus's broker URL, connections and deadlines, and the bytes of a
  received message.
- :mod:`.topology`: exchanges, queues and bindings, and their names.
- :mod:`.declaring`: declaring them, once per connection (:class:`~.declaring.Declarations`,
  the one declaration cache), and the queue-depth probe.
- :mod:`.frames`: AMQP ``basic.publish`` frames built once per message.
- :mod:`.confirms`: publishing with a window of outstanding publisher confirms.
- :mod:`.retrying`: the retrying publisher that carries tasks and dead letters.
- :mod:`.backoff`: the one backoff helper of every retrying path.
- :mod:`.resources`: per-process (and per-thread) resources, made anew after a fork.
"""
