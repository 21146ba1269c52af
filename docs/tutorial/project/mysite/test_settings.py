"""Settings of the tests: the project's, with no event routed to the bus."""

from mysite.settings import *  # noqa: F403

# Tests publish nothing: they need no broker, and send_event writes no outbox row, so a test
# that sends an event needs no database access.
EVENT_BUS_PRODUCER_CONFIG = {}
