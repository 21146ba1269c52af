"""Publishes the broker refuses for permissions: which message it was, and what to do.

RabbitMQ answers a publish it does not allow with a channel error, not a ``basic.nack``:
``403 ACCESS_REFUSED`` when the user may not write to the exchange, or a topic permission
forbids the routing key, and ``406 PRECONDITION_FAILED`` when the message's ``user_id`` is not
the connected user. The channel is closed, so the error names no delivery tag; its text names
the exchange and routing key (or the ``user_id``), which is how the refused message is found
among those awaiting their confirm. Publishing it again fails the same way until an
administrator changes the permissions.
"""

from __future__ import annotations

import re

import attrs

#: The method a refusal answers: ``basic.publish`` (class 60, method 40).
BASIC_PUBLISH = (60, 40)

_TOPIC = re.compile(
    r"access to topic '(?P<routing_key>.*)' in exchange '(?P<exchange>.*)' in vhost "
    r"'(?P<vhost>.*)' refused for user '(?P<user>.*)'"
)
_EXCHANGE = re.compile(
    r"access to exchange '(?P<exchange>.*)' in vhost '(?P<vhost>.*)' refused for user "
    r"'(?P<user>.*)'"
)
_USER_ID = re.compile(
    r"user_id property set to '(?P<user_id>.*)' but authenticated user was '(?P<user>.*)'"
)


@attrs.frozen
class Refusal:
    """A publish the broker refused for permissions, as its channel error tells it.

    Attributes:
        code: the AMQP reply code (403 or 406).
        text: the broker's reply text.
        exchange: the exchange it names, if it names one.
        routing_key: the routing key it names (a topic permission), if it names one.
        user_id: the ``user_id`` property it names (406), if it names one.
        user: the connected broker user it names.
    """

    code: int
    text: str
    exchange: str | None = None
    routing_key: str | None = None
    user_id: str | None = None
    user: str = "?"

    def concerns(self, exchange: str, routing_key: str, properties: dict[str, object]) -> bool:
        """Whether a message published this way is one the broker would refuse so."""
        if self.user_id is not None:
            return properties.get("user_id") == self.user_id
        if exchange != self.exchange:
            return False
        return self.routing_key is None or routing_key == self.routing_key

    @property
    def reason(self) -> str:
        """The broker's reply code and text, and what an administrator can do about it."""
        if self.user_id is not None:
            fix = (
                f"a message's user_id must be the connected broker user: publish as broker "
                f"user {self.user_id!r}, or set user_id to {self.user!r}"
            )
        elif self.routing_key is not None:
            fix = (
                f"grant broker user {self.user!r} write permission on exchange "
                f"{self.exchange!r} for routing key {self.routing_key!r} (its topic "
                "permissions)"
            )
        else:
            fix = (
                f"grant write permission on exchange {self.exchange!r} to broker user {self.user!r}"
            )
        return f"{self.code} {self.text}: {fix}"


def publish_refusal(exc: BaseException) -> Refusal | None:
    """The refusal ``exc`` reports, if it is a permission refusal of a publish, else ``None``."""
    if getattr(exc, "method_sig", None) != BASIC_PUBLISH:
        return None
    code = getattr(exc, "reply_code", None)
    text = str(getattr(exc, "reply_text", "") or "")
    if code == 403:
        found = _TOPIC.search(text) or _EXCHANGE.search(text)
        if found is None:
            return None
        return Refusal(code, text, **_fields(found))
    if code == 406 and (found := _USER_ID.search(text)) is not None:
        return Refusal(code, text, **_fields(found))
    return None


def _fields(found: re.Match[str]) -> dict[str, str]:
    return {k: v for k, v in found.groupdict().items() if k != "vhost" and v is not None}
