"""The authenticity settings: trusted publishers, signing keys and trusted keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from events_celery.conf import bus_settings

SHOP = "org.example.test.ping.v1"


def private_pem(key: Any = None) -> str:
    key = key or Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(private: str) -> str:
    key = serialization.load_pem_private_key(private.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def problems() -> list[tuple[str, str, str]]:
    return [(p.id, p.message, p.hint) for p in bus_settings().problems]


def test_nothing_is_checked_by_default() -> None:
    assert bus_settings().authenticity is None
    assert bus_settings().signing_keys == ()


def test_trusted_publishers_take_a_user_or_a_list_per_type_or_source(settings: Any) -> None:
    settings.EVENT_BUS_TRUSTED_PUBLISHERS = {SHOP: "shop", "source:billing": ["billing", "b2"]}
    parsed = bus_settings()
    assert parsed.trusted_publishers == {
        SHOP: frozenset({"shop"}),
        "source:billing": frozenset({"billing", "b2"}),
    }
    assert parsed.authenticity is not None
    assert parsed.authenticity.publishers == parsed.trusted_publishers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["shop"], "EVENT_BUS_TRUSTED_PUBLISHERS is a list, not a dict"),
        ({"source:": "shop"}, "EVENT_BUS_TRUSTED_PUBLISHERS has the entry 'source:'"),
        ({SHOP: ""}, f"EVENT_BUS_TRUSTED_PUBLISHERS[{SHOP!r}] is ''"),
        ({SHOP: []}, f"EVENT_BUS_TRUSTED_PUBLISHERS[{SHOP!r}] is []"),
    ],
)
def test_malformed_trusted_publishers_are_e046(settings: Any, value: Any, message: str) -> None:
    settings.EVENT_BUS_TRUSTED_PUBLISHERS = value
    assert [(i, m) for i, m, _ in problems()] == [("E046", message)]


def test_signing_keys_read_pem_text_or_a_file(settings: Any, tmp_path: Path) -> None:
    first, second = private_pem(), private_pem()
    (tmp_path / "key.pem").write_text(second)
    settings.EVENT_BUS_SIGNING_KEYS = [
        {"id": "shop-1", "private_key": first},
        {"id": "shop-2", "private_key": str(tmp_path / "key.pem")},
    ]
    keys = bus_settings().signing_keys
    assert problems() == []
    assert [k.key_id for k in keys] == ["shop-1", "shop-2"]
    assert (
        public_pem(second)
        == keys[1]
        .private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            [{"id": f"k{n}", "private_key": "x"} for n in range(3)],
            "EVENT_BUS_SIGNING_KEYS is not a list of one or two keys",
        ),
        ([{"id": "k1"}], "EVENT_BUS_SIGNING_KEYS[0] is a dict with keys ['id']"),
        ([{"id": "k 1", "private_key": "x"}], "EVENT_BUS_SIGNING_KEYS[0] has the key id 'k 1'"),
        (
            [{"id": "k1", "private_key": "/nonexistent/key.pem"}],
            "EVENT_BUS_SIGNING_KEYS[0]['private_key'] is neither PEM text nor a readable file",
        ),
        (
            [{"id": "k1", "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"}],
            "EVENT_BUS_SIGNING_KEYS[0]['private_key'] is not a PEM private key",
        ),
        (
            [{"id": "k1", "private_key": private_pem(generate_private_key(SECP256R1()))}],
            "EVENT_BUS_SIGNING_KEYS[0]['private_key'] is a",  # an EC key, not Ed25519
        ),
    ],
)
def test_bad_signing_keys_are_e047_and_never_show_the_key(
    settings: Any, value: Any, message: str
) -> None:
    settings.EVENT_BUS_SIGNING_KEYS = value
    found = problems()
    assert [i for i, _, _ in found] == ["E047"]
    assert found[0][1].startswith(message)
    assert "PRIVATE KEY" not in found[0][1] + found[0][2]


def test_trusted_keys_with_their_sources_and_types(settings: Any) -> None:
    settings.EVENT_BUS_TRUSTED_KEYS = {
        "shop-1": {
            "public_key": public_pem(private_pem()),
            "sources": ["shop"],
            "event_types": [SHOP],
        }
    }
    settings.EVENT_BUS_REQUIRE_SIGNATURES = True
    parsed = bus_settings()
    assert problems() == []
    key = parsed.trusted_keys["shop-1"]
    assert (key.sources, key.event_types) == (frozenset({"shop"}), frozenset({SHOP}))
    assert parsed.authenticity is not None
    assert parsed.authenticity.require_signatures


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"k1": {"public_key": "x"}}, "EVENT_BUS_TRUSTED_KEYS['k1'] is a dict with keys"),
        (
            {"k1": {"public_key": "x", "sources": [], "event_types": [SHOP]}},
            "EVENT_BUS_TRUSTED_KEYS['k1']['sources'] is []",
        ),
        (
            {"k1": {"public_key": private_pem(), "sources": ["s"], "event_types": [SHOP]}},
            "EVENT_BUS_TRUSTED_KEYS['k1']['public_key'] is not a PEM public key",
        ),
    ],
)
def test_bad_trusted_keys_are_e048(settings: Any, value: Any, message: str) -> None:
    settings.EVENT_BUS_TRUSTED_KEYS = value
    found = problems()
    assert [i for i, _, _ in found] == ["E048"]
    assert found[0][1].startswith(message)


def test_requiring_signatures_without_a_trusted_key_is_e048(settings: Any) -> None:
    settings.EVENT_BUS_REQUIRE_SIGNATURES = True
    assert problems() == [
        (
            "E048",
            "EVENT_BUS_REQUIRE_SIGNATURES is on but EVENT_BUS_TRUSTED_KEYS lists no usable key",
            "list the publishers' public keys in EVENT_BUS_TRUSTED_KEYS: without them every "
            "event would be dead-lettered",
        )
    ]


def test_manage_py_check_reports_them(settings: Any) -> None:
    settings.EVENT_BUS_TRUSTED_PUBLISHERS = {SHOP: 3}
    with pytest.raises(SystemCheckError, match=r"events_celery\.E046"):
        call_command("check")


def test_keys_need_the_cryptography_package(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)
    settings.EVENT_BUS_SIGNING_KEYS = [{"id": "k1", "private_key": "x"}]
    assert problems() == [
        (
            "E047",
            "EVENT_BUS_SIGNING_KEYS[0] needs the 'cryptography' package",
            "install the 'signing' extra: pip install 'events-celery[signing]'",
        )
    ]
