"""TLS of the bus's broker connections: what a refused handshake or certificate login means.

A certificate the broker's name is not in, a CA this service does not trust, a client
certificate the broker does not trust, or a certificate login without a broker user are
settings to fix, not a broker that is down: :func:`tls_failure` turns each into a
:class:`~events_celery.exceptions.BrokerTLSError` that says what was refused and what to change.
"""

from __future__ import annotations

import ssl

from events_celery.conf import BusSettings
from events_celery.exceptions import BrokerTLSError

#: OpenSSL reasons of a TLS alert the broker sent because it did not accept the client's
#: certificate (or got none).
_CLIENT_REFUSED = (
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "TLSV1_ALERT_ACCESS_DENIED",
)


def tls_failure(exc: BaseException, settings: BusSettings, host: str) -> BrokerTLSError | None:
    """The :class:`BrokerTLSError` that ``exc`` (raised connecting to ``host``) is, if any.

    Args:
        exc: what connecting raised (kombu wraps the transport's error; its cause is looked
            at too).
        settings: the settings, to name the one to change.
        host: the broker host connected to.
    """
    source = settings.broker_ssl_source()
    for error in _chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = error.verify_message or str(error)
            if "mismatch" in reason:
                return BrokerTLSError(
                    f"TLS: the broker's certificate is not valid for {host!r} ({reason}): "
                    "connect by a name the certificate is issued for (in the broker URL), "
                    f"or set 'server_hostname' in {source} to that name"
                )
            return BrokerTLSError(
                f"TLS: the broker's certificate at {host!r} could not be verified ({reason}): "
                f"set 'ca_certs' in {source} to the CA file that signed the broker's "
                "certificate"
            )
        if isinstance(error, ssl.SSLError) and error.reason in _CLIENT_REFUSED:
            return BrokerTLSError(
                f"TLS: the broker at {host!r} did not accept this service's client certificate "
                f"({error.reason}): set 'certfile' and 'keyfile' in {source} to a certificate "
                "signed by a CA the broker trusts (its ssl_options.cacertfile)"
            )
        if isinstance(error, ssl.SSLEOFError):
            # With TLS 1.3 the broker checks the client's certificate after the client is done
            # with the handshake: it may close the connection before its alert is read.
            return BrokerTLSError(
                f"TLS: the broker at {host!r} closed the connection during the handshake "
                f"({error}), most likely because it did not accept this service's client "
                f"certificate: set 'certfile' and 'keyfile' in {source} to a certificate signed "
                "by a CA the broker trusts (its ssl_options.cacertfile); is the URL's port the "
                "broker's TLS listener?"
            )
        if isinstance(error, ssl.SSLError):
            return BrokerTLSError(
                f"TLS: the handshake with the broker at {host!r} failed ({error}): is the URL's "
                "port the broker's TLS listener (5671 by default), and are the options in "
                f"{source} right?"
            )
        if _is_external_login_refused(error, settings):
            return BrokerTLSError(
                f"the broker at {host!r} refused the certificate login (EXTERNAL: "
                f"{getattr(error, 'reply_text', error)}): create a broker user named as the "
                "common name of the client certificate (ssl_cert_login_from = common_name), "
                f"with permissions on the virtual host, or set 'certfile' and 'keyfile' in "
                f"{source} to the certificate of a broker user"
            )
    return None


def _is_external_login_refused(error: BaseException, settings: BusSettings) -> bool:
    return (
        settings.broker_login() == "EXTERNAL"
        and getattr(error, "reply_code", None) == 403
        and "EXTERNAL" in str(getattr(error, "reply_text", ""))
    )


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found
