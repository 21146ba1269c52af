"""Broker connections of the bus: which broker, connecting within a time bound, and the bytes
of a received message."""

from __future__ import annotations

import functools
import logging
import ssl
import time
from typing import Any

from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.message import Message

from events_celery.bus.broker.tls import tls_failure
from events_celery.conf import BusSettings, bus_settings

logger = logging.getLogger(__name__)


def broker_url(settings: BusSettings) -> str:
    """The broker URL from the settings (see ``EVENT_BUS_BROKER_URL``), else Celery's own.

    Several URLs (a cluster's nodes) are one string, separated by ``;``, as kombu takes them.
    """
    if settings.broker_url:
        return settings.broker_url
    from celery import current_app

    url: object = current_app.conf.broker_url or "amqp://guest:guest@localhost:5672//"
    if isinstance(url, (list, tuple)):  # Celery also takes a list of failover URLs
        return ";".join(str(u) for u in url)
    return str(url)


@functools.lru_cache(maxsize=8)
def _login(url: str, login_method: str | None) -> str | None:
    connection = Connection(url, login_method=login_method)
    if (connection.login_method or "").upper() == "EXTERNAL":
        return None  # the broker takes the user from the client's certificate
    if connection.userid:
        return str(connection.userid)
    default = connection.transport.default_connection_params.get("userid")
    return str(default) if default else None


def publisher_user(settings: BusSettings) -> str | None:
    """The broker user events are published as: the ``user_id`` their messages carry.

    The user of the broker URL (of its first node), or the transport's default user
    (``guest``) when the URL names none; ``None`` for a transport without users
    (``memory://``) or a login the broker takes from a TLS certificate (``EXTERNAL``, in the
    URL or in ``EVENT_BUS_BROKER_LOGIN_METHOD``).
    """
    return _login(broker_url(settings), settings.broker_login())


class BusConnection(Connection):
    """kombu's connection, checking a TLS broker's certificate against the host of its URL.

    kombu checks the broker's name only when the TLS options name ``server_hostname``, and
    fills an empty one with the host it connects to after turning ``localhost`` into
    ``127.0.0.1`` (which a certificate for ``localhost`` never matches), once for every URL of
    a failover list. Here each URL's certificate is checked against that URL's host, as
    written, unless the options name another.
    """

    # kombu calls it with keyword arguments only (on creation, and on each failover switch).
    def _init_params(self, **params: Any) -> None:  # type: ignore[override]
        options = params.get("ssl")
        if (
            isinstance(options, dict)
            and options.get("server_hostname") is None
            and options.get("cert_reqs") != ssl.CERT_NONE  # nothing verified (check E049)
        ):
            params["ssl"] = {**options, "server_hostname": params.get("hostname")}
        super()._init_params(**params)


def bus_connection(settings: BusSettings, *, confirm_publish: bool = True) -> Connection:
    """A new (lazy) broker connection; with publisher confirms on each publish by default.

    Its TLS options and login method come from the settings (``EVENT_BUS_BROKER_USE_SSL``,
    ``EVENT_BUS_BROKER_LOGIN_METHOD``, else Celery's when the bus uses Celery's broker).
    """
    options = {"confirm_publish": True} if confirm_publish else {}
    return BusConnection(
        broker_url(settings),
        transport_options=options,
        connect_timeout=settings.publish_timeout,
        ssl=settings.broker_ssl(),
        login_method=settings.broker_login(),
    )


def connect(connection: Connection, *, timeout: float) -> Any:
    """Open ``connection`` within ``timeout`` seconds, without kombu's hidden retries.

    kombu's own ``connect()`` retries once after sleeping two seconds; callers here bound
    their total time themselves, so one attempt per broker URL with a socket timeout is what
    they need. With several URLs (kombu failover, ``"amqp://a;amqp://b"``), each is tried once
    in kombu's failover order, starting with the one the connection is on, and each gets an
    equal share of the time left to connect; the connection stays on the URL that answered.
    The socket's read and write timeouts are set to ``timeout`` too, so a peer that stops
    answering cannot hold a publish longer.

    Returns:
        the transport's connection object (``amqp.Connection`` on RabbitMQ).

    Raises:
        BrokerTLSError: the TLS handshake or the certificate login was refused (at once:
            trying again cannot help until a certificate or a setting changes).
        whatever the transport raises when no broker URL can be reached in time (the error
        of the last one tried).
    """
    timeout = max(timeout, 0.001)
    deadline = Deadline(timeout)
    urls = max(len(connection.alt), 1)
    unreachable: tuple[type[BaseException], ...] = (
        OperationalError,  # what ensure_connection() raises for them
        *connection.recoverable_connection_errors,
    )
    for tried in range(urls):
        connection.connect_timeout = max(deadline.remaining() / (urls - tried), 0.001)
        if is_amqp(connection):
            connection.transport_options = {
                **(connection.transport_options or {}),
                "read_timeout": timeout,
                "write_timeout": timeout,
            }
        tls = connection.ssl if isinstance(connection.ssl, dict) else {}
        host = tls.get("server_hostname") or connection.hostname
        try:
            connection.ensure_connection(max_retries=0)
        except Exception as exc:
            refused = tls_failure(exc, bus_settings(), str(host))
            if refused is not None:
                raise refused from exc
            if not isinstance(exc, unreachable):
                raise
            if tried + 1 == urls or deadline.expired():
                raise
            logger.warning(
                "broker %s cannot be reached (%s); trying the next broker URL",
                connection.as_uri(),
                exc,
            )
            connection.maybe_switch_next()
            continue
        return connection.connection
    raise AssertionError("unreachable")  # pragma: no cover


def is_amqp(connection: Connection) -> bool:
    """Whether ``connection`` speaks AMQP 0-9-1 (publisher confirms exist) or is virtual."""
    return bool(connection.transport.driver_type == "amqp")


def drop(connection: Connection | None) -> None:
    """Forget a connection without the AMQP close handshake.

    Used after a failure: a broker that stopped reading (a blocked connection, a dead peer)
    would never answer the handshake.
    """
    if connection is None:
        return
    try:
        connection.collect()
    except Exception:  # the connection is already broken; nothing more to release
        logger.debug("dropping a broken broker connection failed", exc_info=True)


class Deadline:
    """A point in time that several steps share: each gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(self.end - time.monotonic(), 0.0)

    def expired(self) -> bool:
        """Whether no time is left."""
        return time.monotonic() >= self.end


def raw_body(message: Message) -> bytes:
    """The undecoded body of a message (events are never passed through kombu serializers)."""
    body = message.body
    if isinstance(body, str):  # virtual transports may hand text back
        return body.encode("utf-8")
    return body or b""
