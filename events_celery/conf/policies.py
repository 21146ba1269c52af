"""The two retry policies (publishing, receivers) and how each is read from a dict."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from events_celery.conf.problems import Problems


@attrs.frozen
class PublishRetryPolicy:
    """Attempts of a publish and the pauses between them (``EVENT_BUS_PUBLISH_RETRY_POLICY``).

    ``max_attempts`` counts every attempt, the first one included, as the receivers'
    :class:`RetryPolicy` does.
    """

    max_attempts: int = 4
    interval_start: float = 0.0
    interval_step: float = 0.5
    interval_max: float = 2.0


@attrs.frozen
class RetryPolicy:
    """Retries of each receiver (see ``EVENT_BUS_RETRY_POLICY``)."""

    max_attempts: int = 5
    backoff: float = 2.0
    backoff_max: float = 300.0
    jitter: bool = True


def read_number(
    problems: Problems, where: str, value: Any, default: float, *, minimum: float, check_id: str
) -> float:
    """``value`` as a float, or ``default`` after adding a problem when it is not a number.

    Args:
        problems: where a problem is added.
        where: the setting (or key of one) in the message.
        value: the value read.
        default: the value used instead of a bad one, and the hint's example.
        minimum: the smallest value allowed.
        check_id: the check id of the problem.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        problems.add(
            check_id, f"{where} is {value!r}", f"use a number >= {minimum}, e.g. {default}"
        )
        return default
    return float(value)


def _keys(problems: Problems, setting: str, config: Any, cls: type, check_id: str) -> bool:
    """Whether ``config`` is a dict; adds problems for it not being one, or for unknown keys."""
    names = [field.name for field in attrs.fields(cls)]
    if not isinstance(config, Mapping):
        problems.add(check_id, f"{setting} is {config!r}", f"use a dict with keys among {names}")
        return False
    unknown = sorted(map(str, set(config) - set(names)))
    if unknown:
        problems.add(check_id, f"{setting} has unknown key(s) {unknown}", f"the keys are {names}")
    return True


#: The key ``max_attempts`` replaces (kombu's name; it counted the attempts after the first).
DEPRECATED_MAX_RETRIES = "max_retries"


def _from_max_retries(
    problems: Problems, setting: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    """The policy with ``max_retries`` read as ``max_attempts`` (plus one); warns W006."""
    config = dict(config)
    retries = config.pop(DEPRECATED_MAX_RETRIES)
    if "max_attempts" in config:
        problems.add(
            "W006",
            f"{setting} has both 'max_attempts' and the deprecated 'max_retries'; "
            "'max_retries' is ignored",
            f"remove 'max_retries' from {setting}",
        )
        return config
    retries = read_number(
        problems,
        f"{setting}['max_retries']",
        retries,
        PublishRetryPolicy().max_attempts - 1,
        minimum=0,
        check_id="E021",
    )
    config["max_attempts"] = int(retries) + 1
    problems.add(
        "W006",
        f"{setting}['max_retries'] is deprecated",
        f"use 'max_attempts': {int(retries) + 1} (every attempt, the first included: "
        "max_retries + 1), as EVENT_BUS_RETRY_POLICY counts them",
    )
    return config


def parse_publish_retry_policy(
    problems: Problems, config: Any, *, setting: str = "EVENT_BUS_PUBLISH_RETRY_POLICY"
) -> PublishRetryPolicy:
    """Read a publish retry policy (a dict); what is wrong goes to ``problems`` as E021.

    Keys left out, and keys whose value is wrong, keep their defaults.
    """
    default = PublishRetryPolicy()
    if isinstance(config, Mapping) and DEPRECATED_MAX_RETRIES in config:
        config = _from_max_retries(problems, setting, config)
    if not _keys(problems, setting, config, PublishRetryPolicy, "E021"):
        return default
    values = {
        field.name: read_number(
            problems,
            f"{setting}[{field.name!r}]",
            config.get(field.name, getattr(default, field.name)),
            getattr(default, field.name),
            minimum=1 if field.name == "max_attempts" else 0,
            check_id="E021",
        )
        for field in attrs.fields(PublishRetryPolicy)
    }
    return PublishRetryPolicy(
        max_attempts=int(values["max_attempts"]),
        interval_start=values["interval_start"],
        interval_step=values["interval_step"],
        interval_max=values["interval_max"],
    )


def parse_retry_policy(
    problems: Problems, config: Any, *, setting: str = "EVENT_BUS_RETRY_POLICY"
) -> RetryPolicy:
    """Read a receiver retry policy (a dict); what is wrong goes to ``problems`` as E022.

    Keys left out, and keys whose value is wrong, keep their defaults. ``setting`` names the
    policy in the messages.
    """
    default = RetryPolicy()
    if not _keys(problems, setting, config, RetryPolicy, "E022"):
        return default
    max_attempts = config.get("max_attempts", default.max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        problems.add(
            "E022",
            f"{setting}['max_attempts'] is {max_attempts!r}",
            "use a whole number >= 1 (1 means no retry)",
        )
        max_attempts = default.max_attempts
    backoff, backoff_max = (
        read_number(
            problems,
            f"{setting}[{name!r}]",
            config.get(name, getattr(default, name)),
            getattr(default, name),
            minimum=0,
            check_id="E022",
        )
        for name in ("backoff", "backoff_max")
    )
    if backoff_max < backoff:
        problems.add(
            "E022",
            f"{setting} backoff_max ({backoff_max}) is below backoff ({backoff})",
            "make backoff_max at least as large as backoff",
        )
    jitter = config.get("jitter", default.jitter)
    if not isinstance(jitter, bool):
        problems.add("E022", f"{setting}['jitter'] is {jitter!r}", "use True/False")
        jitter = default.jitter
    return RetryPolicy(max_attempts, backoff, backoff_max, jitter)
