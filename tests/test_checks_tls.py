"""System checks of the broker's security: TLS options, login method, plain AMQP off-host."""

from __future__ import annotations

import ssl

import pytest

from events_celery.checks import check_settings
from events_celery.conf import bus_settings


def found(check_id: str) -> list[str]:
    return [m.msg + " | " + str(m.hint) for m in check_settings() if m.id == check_id]


@pytest.mark.parametrize(
    "url",
    [
        "amqp://orders:s3cret@rabbit.internal:5672/orders",
        "amqp://localhost//;amqp://orders:s3cret@rabbit.internal:5672/orders",
    ],
)
def test_plain_amqp_to_another_host_warns_naming_the_url_without_its_password(
    settings, url
) -> None:
    settings.CELERY_BROKER_URL = url

    (warning,) = found("events_celery.W007")

    assert "amqp://orders:****@rabbit.internal:5672/orders" in warning
    assert "s3cret" not in warning
    assert "amqps://" in warning
    assert "CELERY_BROKER_USE_SSL" in warning


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@localhost:5672//",
        "amqp://guest:guest@127.0.0.1:5672//",
        "amqp://guest:guest@[::1]:5672//",
        "amqps://orders@rabbit.internal:5671/orders",
        "memory://",
    ],
)
def test_loopback_tls_and_other_transports_do_not_warn(settings, url) -> None:
    settings.CELERY_BROKER_URL = url

    assert found("events_celery.W007") == []


def test_plain_amqp_url_with_tls_options_does_not_warn(settings, tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    settings.CELERY_BROKER_URL = "amqp://rabbit.internal:5671//"
    settings.CELERY_BROKER_USE_SSL = {"ca_certs": str(ca)}

    assert found("events_celery.W007") == []
    assert bus_settings().broker_ssl() == {"ca_certs": str(ca)}


def test_bad_tls_options_are_reported_with_the_setting_they_are_in(settings, tmp_path) -> None:
    settings.CELERY_BROKER_URL = "amqps://rabbit.internal//"
    settings.CELERY_BROKER_USE_SSL = {
        "ca_certs": str(tmp_path / "missing.pem"),
        "verify": True,
        "cert_reqs": ssl.CERT_NONE,
    }

    errors = found("events_celery.E049")

    assert len(errors) == 3
    assert any("CELERY_BROKER_USE_SSL['ca_certs']" in e and "missing.pem" in e for e in errors)
    assert any("unknown key(s) ['verify']" in e for e in errors)
    assert any("CERT_NONE" in e and "not verified" in e for e in errors)


def test_bus_tls_options_of_the_wrong_type_are_reported_and_not_used(settings) -> None:
    settings.EVENT_BUS_BROKER_USE_SSL = "yes"

    (error,) = found("events_celery.E049")

    assert "EVENT_BUS_BROKER_USE_SSL is neither a bool nor a dict (got str)" in error
    assert bus_settings().broker_use_ssl is None


def test_external_login_needs_a_client_certificate(settings) -> None:
    settings.CELERY_BROKER_URL = "amqps://rabbit.internal//"
    settings.CELERY_BROKER_LOGIN_METHOD = "EXTERNAL"

    (error,) = found("events_celery.E050")

    assert "EXTERNAL" in error
    assert "'certfile' and 'keyfile' in CELERY_BROKER_USE_SSL" in error


def test_an_unknown_login_method_is_reported(settings) -> None:
    settings.EVENT_BUS_BROKER_LOGIN_METHOD = "KERBEROS"

    (error,) = found("events_celery.E050")

    assert "EVENT_BUS_BROKER_LOGIN_METHOD is 'KERBEROS'" in error
    assert "EXTERNAL" in error


def test_the_bus_takes_celerys_tls_only_for_celerys_broker(settings, tmp_path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-")
    settings.CELERY_BROKER_URL = "amqps://rabbit-a//"
    settings.CELERY_BROKER_USE_SSL = {"certfile": str(cert)}
    settings.CELERY_BROKER_LOGIN_METHOD = "EXTERNAL"

    assert bus_settings().broker_ssl() == {"certfile": str(cert)}
    assert bus_settings().broker_login() == "EXTERNAL"

    settings.EVENT_BUS_BROKER_URL = "amqps://rabbit-b//"

    assert bus_settings().broker_ssl() == {}  # amqps://: TLS with the system's CAs
    assert bus_settings().broker_login() is None

    settings.EVENT_BUS_BROKER_URL = "amqp://rabbit-b//"

    assert bus_settings().broker_ssl() is False
