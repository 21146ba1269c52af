"""Parsing the authenticity settings: trusted publishers, signing keys and trusted keys.

``EVENT_BUS_TRUSTED_PUBLISHERS`` (check ``E046``), ``EVENT_BUS_SIGNING_KEYS`` (``E047``),
``EVENT_BUS_TRUSTED_KEYS`` and ``EVENT_BUS_REQUIRE_SIGNATURES`` (``E048``). Keys are PEM text,
or the path of a PEM file; they are read once, when the settings are parsed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events_celery.authenticity import KEY_ID_PATTERN, SOURCE_PREFIX, SigningKey, TrustedKey
from events_celery.conf.problems import Problems

#: The hint of every problem with a key that ``cryptography`` is missing for.
INSTALL_HINT = "install the 'signing' extra: pip install 'events-celery[signing]'"


def parse_trusted_publishers(
    problems: Problems, value: Any, *, setting: str
) -> dict[str, frozenset[str]]:
    """``{event type or "source:<source>": broker user, or a list of users}``."""
    if not isinstance(value, dict):
        problems.add(
            "E046",
            f"{setting} is a {type(value).__name__}, not a dict",
            f"map event types (or 'source:<source>') to broker users, e.g. {setting} = "
            "{'org.example.shop.order.placed.v1': 'shop', 'source:shop': 'shop'}",
        )
        return {}
    parsed: dict[str, frozenset[str]] = {}
    for entry, users in value.items():
        if not isinstance(entry, str) or not entry or entry == SOURCE_PREFIX:
            problems.add(
                "E046",
                f"{setting} has the entry {entry!r}",
                "name an event type, or a source as 'source:<source>'",
            )
            continue
        names = [users] if isinstance(users, str) else users
        if (
            not isinstance(names, list | tuple)
            or not names
            or not all(isinstance(n, str) and n for n in names)
        ):
            problems.add(
                "E046",
                f"{setting}[{entry!r}] is {users!r}",
                "give the broker user that publishes it (a string), or a list of users "
                "while it moves from one user to another",
            )
            continue
        parsed[entry] = frozenset(names)
    return parsed


def parse_signing_keys(problems: Problems, value: Any, *, setting: str) -> tuple[SigningKey, ...]:
    """``[{"id": key id, "private_key": PEM or path}]``: one key, two during a rotation."""
    if value in (None, [], ()):
        return ()
    example = f"{setting} = [{{'id': 'shop-2026', 'private_key': '/etc/shop/event-key.pem'}}]"
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list | tuple) or len(value) > 2:
        problems.add(
            "E047",
            f"{setting} is not a list of one or two keys",
            f"list this service's Ed25519 key (two while it rotates), e.g. {example}",
        )
        return ()
    keys = []
    for index, item in enumerate(value):
        where = f"{setting}[{index}]"
        if not isinstance(item, dict) or set(item) != {"id", "private_key"}:
            problems.add("E047", f"{where} is {_shape(item)}", f"use the form {example}")
            continue
        if not _key_id(problems, "E047", where, item["id"]):
            continue
        key = _load(problems, "E047", where, item["private_key"], private=True)
        if key is not None:
            keys.append(SigningKey(item["id"], key))
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        problems.add("E047", f"{setting} names key id {ids[0]!r} twice", "give each key its id")
    return tuple(keys)


def parse_trusted_keys(problems: Problems, value: Any, *, setting: str) -> dict[str, TrustedKey]:
    """``{key id: {"public_key": PEM or path, "sources": [...], "event_types": [...]}}``."""
    if not value:
        return {}
    example = (
        f"{setting} = {{'shop-2026': {{'public_key': '/etc/keys/shop-2026.pub.pem', "
        "'sources': ['shop'], 'event_types': ['org.example.shop.order.placed.v1']}}"
    )
    if not isinstance(value, dict):
        problems.add("E048", f"{setting} is a {type(value).__name__}", f"use {example}")
        return {}
    keys = {}
    for key_id, item in value.items():
        where = f"{setting}[{key_id!r}]"
        if not _key_id(problems, "E048", setting, key_id):
            continue
        if not isinstance(item, dict) or set(item) != {"public_key", "sources", "event_types"}:
            problems.add(
                "E048",
                f"{where} is {_shape(item)}",
                "give 'public_key', 'sources' and 'event_types' (the sources and event types "
                f"this key may sign), e.g. {example}",
            )
            continue
        lists = {}
        for name in ("sources", "event_types"):
            names = item[name]
            if (
                not isinstance(names, list | tuple | set | frozenset)
                or not names
                or not all(isinstance(n, str) and n for n in names)
            ):
                problems.add(
                    "E048",
                    f"{where}[{name!r}] is {names!r}",
                    f"list the {name.replace('_', ' ')} this key may sign (at least one)",
                )
                break
            lists[name] = frozenset(names)
        else:
            key = _load(problems, "E048", where, item["public_key"], private=False)
            if key is not None:
                keys[key_id] = TrustedKey(key_id, key, lists["sources"], lists["event_types"])
    return keys


def _shape(item: object) -> str:
    # Never the value itself: it may hold a private key.
    if isinstance(item, dict):
        return f"a dict with keys {sorted(map(str, item))}"
    return f"a {type(item).__name__}"


def _key_id(problems: Problems, check_id: str, where: str, key_id: object) -> bool:
    if isinstance(key_id, str) and KEY_ID_PATTERN.match(key_id):
        return True
    problems.add(
        check_id,
        f"{where} has the key id {key_id!r}",
        "use 1 to 64 letters, digits, '.', '-' or '_', e.g. 'shop-2026'",
    )
    return False


def _load(problems: Problems, check_id: str, where: str, text: object, *, private: bool) -> Any:
    """An Ed25519 key from PEM text or a PEM file; ``None`` (and a problem) when it is not."""
    what = "private_key" if private else "public_key"
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        problems.add(check_id, f"{where} needs the 'cryptography' package", INSTALL_HINT)
        return None
    if isinstance(text, Path):
        text = str(text)
    if not isinstance(text, str | bytes) or not text:
        problems.add(
            check_id, f"{where}[{what!r}] is a {type(text).__name__}", "give PEM text or a path"
        )
        return None
    data = text.encode() if isinstance(text, str) else text
    if not data.lstrip().startswith(b"-----BEGIN"):
        try:
            data = Path(data.decode()).read_bytes()
        except (OSError, UnicodeDecodeError) as exc:
            problems.add(
                check_id,
                f"{where}[{what!r}] is neither PEM text nor a readable file: {exc}",
                "give the PEM text, or the path of the PEM file",
            )
            return None
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        problems.add(
            check_id,
            f"{where}[{what!r}] is not a PEM {what.replace('_', ' ')} ({exc})",
            "make one with: openssl genpkey -algorithm ed25519 -out key.pem (private, no "
            "password); openssl pkey -in key.pem -pubout -out key.pub.pem (public)",
        )
        return None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        problems.add(
            check_id,
            f"{where}[{what!r}] is a {type(key).__name__}, not an Ed25519 key",
            "make an Ed25519 key: openssl genpkey -algorithm ed25519 -out key.pem",
        )
        return None
    return key
