"""The AsyncAPI document, checked field by field and by the official AsyncAPI parser."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.test import override_settings

from events_celery.catalog import AVRO_SCHEMA_FORMAT
from tests.catalog.asyncapi_validator import errors, require_validator, validate

ROOT = Path(__file__).resolve().parents[2]
PLACED = "org.example.shop.order.placed.v1"
PING = "org.example.test.ping.v1"


ROUTED = {
    "CELERY_BROKER_URL": "amqp://alice:s3cret@rabbit.example:5673/shop",
    "EVENT_BUS_TOPIC_PREFIX": "prod.",
    "EVENT_BUS_PRODUCER_CONFIG": {
        PLACED: {"orders": {"event_key_field": "order.id"}},
        PING: {"pings": {}},
    },
    "EVENT_BUS_CONSUMER_CONFIG": {"orders": {"event_types": [PLACED]}, "audit": {}},
}


def catalog(*args):
    out = StringIO()
    call_command("event_catalog", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def routed(settings):
    for name, value in ROUTED.items():
        setattr(settings, name, value)
    return settings


def test_the_document_has_a_channel_per_topic_exchange_with_amqp_bindings(routed):
    document = json.loads(catalog("--format", "json"))
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == {"orders", "pings", "audit"}
    orders = document["channels"]["orders"]
    assert orders["address"] == "prod.orders"
    assert orders["bindings"]["amqp"]["exchange"] == {
        "name": "prod.orders",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "shop",
    }
    assert orders["messages"] == {PLACED: {"$ref": f"#/components/messages/{PLACED}"}}


def test_the_server_comes_from_the_broker_url_without_credentials(routed):
    text = catalog("--format", "json")
    assert "alice" not in text
    assert "s3cret" not in text
    assert json.loads(text)["servers"] == {
        "broker": {
            "host": "rabbit.example:5673",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": "virtual host 'shop'",
        }
    }


def test_operations_follow_the_producer_config_and_the_subscriptions(routed):
    operations = json.loads(catalog("--format", "json"))["operations"]
    assert sorted(operations) == ["receive-audit", "receive-orders", "send-orders", "send-pings"]
    send = operations["send-orders"]
    assert send["action"] == "send"
    assert send["channel"] == {"$ref": "#/channels/orders"}
    assert send["messages"] == [{"$ref": f"#/channels/orders/messages/{PLACED}"}]
    assert send["bindings"]["amqp"]["cc"] == [PLACED]
    assert send["bindings"]["amqp"]["deliveryMode"] == 2
    receive = operations["receive-orders"]
    assert receive["action"] == "receive"
    assert "'tests.orders'" in receive["description"]
    assert receive["bindings"]["amqp"]["cc"] == [PLACED]
    assert operations["receive-audit"]["bindings"]["amqp"]["cc"] == ["#"]


def test_messages_carry_the_avro_schema_and_the_wire_headers(routed):
    from tests.testapp.events import ORDER_PLACED

    message = json.loads(catalog("--format", "json"))["components"]["messages"][PLACED]
    assert message["payload"] == {
        "schemaFormat": AVRO_SCHEMA_FORMAT,
        "schema": ORDER_PLACED.serializer.schema,
    }
    assert message["contentType"] == "application/avro"
    headers = message["headers"]["properties"]
    assert {
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_time",
        "ce_minorversion",
        "ce_datacontenttype",
        "ce_partitionkey",
        "sourcehost",
        "sourcelib",
        "schemafingerprint",
    } == set(headers)
    assert headers["ce_type"]["const"] == PLACED
    assert headers["schemafingerprint"]["const"] == ORDER_PLACED.serializer.fingerprint
    assert "ce_partitionkey" not in message["headers"]["required"]


def test_yaml_and_json_give_the_same_document(routed):
    assert yaml.safe_load(catalog()) == json.loads(catalog("--format", "json"))


def test_output_writes_the_file(routed, tmp_path):
    path = tmp_path / "asyncapi.yaml"
    call_command("event_catalog", "--output", str(path), stdout=StringIO(), stderr=StringIO())
    assert yaml.safe_load(path.read_text())["info"]["title"] == "tests events"


def test_broken_settings_are_a_command_error(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {"org.example.test.nowhere.v1": {"t": {}}}
    with pytest.raises(CommandError, match=r"org\.example\.test\.nowhere\.v1"):
        catalog()


def _example_catalog(service: str, path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": f"config.settings.{service}"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, str(ROOT / "config" / "manage.py"), "event_catalog", "-o", str(path)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """The parser's reports on this suite's documents, from one run of the parser (it is slow
    to start): the test service's, the example services', and two broken ones."""
    require_validator()
    folder = tmp_path_factory.mktemp("asyncapi")
    with override_settings(**ROUTED):
        document = json.loads(catalog("--format", "json"))
    (folder / "tests.json").write_text(json.dumps(document))
    no_action = copy.deepcopy(document)
    del no_action["operations"]["send-orders"]["action"]
    (folder / "no-action.json").write_text(json.dumps(no_action))
    bad_avro = copy.deepcopy(document)
    bad_avro["components"]["messages"][PLACED]["payload"]["schema"]["fields"][0]["type"] = (
        "no-such-avro-type"
    )
    (folder / "bad-avro.json").write_text(json.dumps(bad_avro))
    for service in ("orders", "billing", "notifications"):
        _example_catalog(service, folder / f"{service}.yaml")
    names = ["tests.json", "no-action.json", "bad-avro.json"]
    names += ["orders.yaml", "billing.yaml", "notifications.yaml"]
    _, reports = validate(*(folder / name for name in names))
    return folder, dict(zip(names, reports, strict=True))


@pytest.mark.asyncapi
def test_the_document_is_valid_asyncapi_3(validated):
    _, reports = validated
    assert errors(reports["tests.json"]) == []
    assert reports["tests.json"]["version"] == "3.0.0"


@pytest.mark.asyncapi
def test_each_example_service_has_a_valid_asyncapi_3_document(validated):
    folder, reports = validated
    for name in ("orders.yaml", "billing.yaml", "notifications.yaml"):
        assert errors(reports[name]) == [], name
    billing = yaml.safe_load((folder / "billing.yaml").read_text())
    assert sorted(billing["operations"]) == ["receive-orders"]
    assert len(billing["components"]["messages"]) == 2
    notifications = yaml.safe_load((folder / "notifications.yaml").read_text())
    assert list(notifications["components"]["messages"]) == [PLACED]


@pytest.mark.asyncapi
def test_the_validator_refuses_a_document_missing_an_operations_action(validated):
    _, reports = validated
    assert any("action" in d["message"] for d in errors(reports["no-action.json"]))


@pytest.mark.asyncapi
def test_the_validator_refuses_an_invalid_avro_payload_schema(validated):
    _, reports = validated
    assert any(d["severity"] == 0 for d in reports["bad-avro.json"]["diagnostics"])
