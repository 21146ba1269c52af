"""The publish path: from ``send_event`` to the broker.

``send_event`` hands a validated event to :mod:`.producer`, which encodes it once and, by
``EVENT_BUS_PUBLISH_MODE``, either writes it to the outbox table in the caller's transaction
(:mod:`.outbox`) for this process's background publisher (:mod:`.background`) to publish after
the commit, or publishes it at once with confirms (:mod:`.direct`). Rows whose writer died are
published by the relay (:mod:`.relay`): the ``relay_events`` command, or a worker's sweeper.
Both publish rows with :mod:`.rows`; :mod:`.claims` claims rows for the relay, keeps rows'
leases and deletes published ones; :mod:`.routes` says which topics an event goes to.
"""
