"""The one backoff helper: how long every retrying path of the bus waits before trying again.

Two policies say how long, each read from its setting:

- :class:`~events_celery.conf.PublishRetryPolicy` (``EVENT_BUS_PUBLISH_RETRY_POLICY``, kombu's
  retry policy keys): the pause grows by ``interval_step`` from ``interval_start`` up to
  ``interval_max``. Publishing a task or a dead letter, a direct publish, the background
  publisher and the relay wait so.
- :class:`~events_celery.conf.RetryPolicy` (``EVENT_BUS_RETRY_POLICY`` and a receiver's own):
  the wait doubles from ``backoff`` up to ``backoff_max``. A failing receiver's retry waits so.
"""

from __future__ import annotations

import math
import random

from events_celery.conf import PublishRetryPolicy, RetryPolicy

#: The shortest pause of a path that tries the broker again on its own, without a caller
#: waiting (the relay, the background publisher, direct mode's retries).
MIN_PAUSE = 0.1


def publish_pause(
    policy: PublishRetryPolicy, failures: int, *, jitter: bool = True, at_least: float = 0.0
) -> float:
    """Seconds to wait after ``failures`` failed publish attempts in a row (0, 1, 2, ...).

    Args:
        policy: the publish retry policy.
        failures: failed attempts so far; the pause after the first is ``interval_start``.
        jitter: scale the pause by a random factor in [0.5, 1] (many processes that failed
            together do not retry together).
        at_least: the shortest pause, before the jitter.
    """
    delay = max(
        min(policy.interval_start + policy.interval_step * failures, policy.interval_max),
        at_least,
    )
    return delay * random.uniform(0.5, 1.0) if jitter else delay


def retry_delay(policy: RetryPolicy, attempt: int, *, quorum: bool = False) -> float:
    """Seconds to wait before ``attempt`` (2, 3, ...): exponential backoff with jitter.

    On quorum queues Celery delays tasks on the broker in whole seconds and refuses less than
    one, so the wait is rounded up to the next whole second there (at least 1 s).
    """
    delay = float(min(policy.backoff * 2 ** (attempt - 2), policy.backoff_max))
    if policy.jitter:
        delay *= random.uniform(0.5, 1.0)
    return float(max(math.ceil(delay), 1)) if quorum else delay
