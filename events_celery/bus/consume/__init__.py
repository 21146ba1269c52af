"""The consume path: from this service's queues to its receivers.

A worker's consumer step (:mod:`.step`) reads the event queues, checks each message's envelope
and hands events in batches to the ``deliver_events`` task (:mod:`.tasks`) on the
service-private task queue; the task runs each receiver of each event once, gives a failing
one its own retry task, and dead-letters the event for it after the last attempt.
"""
