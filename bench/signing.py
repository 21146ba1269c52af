"""Benchmark: the CPU cost of signing and verifying events, against the same events unsigned.

Run with ``python bench/signing.py``. Each event is a PING-sized event of the wire format: its
headers built and its Avro body encoded (the baseline of the publisher), then the same plus an
Ed25519 signature over :func:`events_celery.wire.signed_bytes`; on the consumer side, its
envelope checked and its body decoded, then the same plus the signature verified. CPU time
(``time.process_time``) per event, best of ``REPEAT`` runs, and the signed/unsigned ratio.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django  # after the path set-up
from django.conf import settings

settings.configure(INSTALLED_APPS=[], USE_TZ=True)
django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402 (Django is configured first)

from events_celery.authenticity import Authenticity, SigningKey, TrustedKey, sign  # noqa: E402 (Django is configured first)
from events_celery.event_registry import EventRegistry  # noqa: E402 (Django is configured first)
from events_celery.metadata import EventMetadata  # noqa: E402 (Django is configured first)
from events_celery.signals import EventSignal  # noqa: E402 (Django is configured first)
from events_celery.wire import HEADER_SIGNATURE, check_message, encode_event  # noqa: E402 (Django is configured first)

NUMBER = 5_000
REPEAT = 5
EVENT_TYPE = "org.example.bench.signing.ping.v1"


def best(run: Callable[[], object]) -> float:
    """Least CPU seconds per event over ``REPEAT`` runs of ``NUMBER`` events."""
    times = []
    for _ in range(REPEAT):
        start = time.process_time()
        for _ in range(NUMBER):
            run()
        times.append((time.process_time() - start) / NUMBER)
    return min(times)


def main() -> None:
    registry = EventRegistry()
    signal = EventSignal(EVENT_TYPE, data={"n": int, "note": str}, event_registry=registry)
    payload = {"n": 42, "note": "x" * 60}
    metadata = EventMetadata(
        id=uuid.uuid4(),
        event_type=EVENT_TYPE,
        minor_version=0,
        source="shop",
        source_host="web-1",
        time=datetime.now(UTC),
    )
    key = SigningKey("shop-1", Ed25519PrivateKey.generate())
    trusted = TrustedKey(
        "shop-1", key.private_key.public_key(), frozenset({"shop"}), frozenset({EVENT_TYPE})
    )
    checks = Authenticity(trusted_keys={"shop-1": trusted}, require_signatures=True)

    def publish() -> tuple[dict[str, str], bytes]:
        message = encode_event(signal, metadata, signal.serializer.encode(payload))
        return message.headers, message.body

    def publish_signed() -> tuple[dict[str, str], bytes]:
        headers, body = publish()
        headers[HEADER_SIGNATURE] = sign(headers, body, [key])
        return headers, body

    unsigned, signed_ = publish(), publish_signed()

    def consume(message: tuple[dict[str, str], bytes], authenticity: Authenticity | None) -> None:
        headers, body = message
        checked = check_message(
            headers,
            body,
            content_type="application/avro",
            max_size=1 << 20,
            writer_schemas=lambda s, f: None,
            routing_key=EVENT_TYPE,
            event_registry=registry,
            authenticity=authenticity,
        )
        checked.signal.serializer.decode(body, checked.writer_schema)

    rows = [
        ("publish: headers + Avro encode", best(publish), best(publish_signed)),
        (
            "consume: envelope check + Avro decode",
            best(lambda: consume(unsigned, None)),
            best(lambda: consume(signed_, checks)),
        ),
    ]
    print(f"{'':40} {'unsigned':>12} {'signed':>12} {'ratio':>7}")
    for name, plain, with_signature in rows:
        print(
            f"{name:40} {plain * 1e6:9.1f} µs {with_signature * 1e6:9.1f} µs "
            f"{with_signature / plain:6.1f}x"
        )


if __name__ == "__main__":
    main()
