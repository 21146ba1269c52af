"""Certificates for a private RabbitMQ node with TLS, made with ``openssl`` in a temporary dir.

Nothing here is committed: every run makes a fresh CA, a server certificate for ``localhost``
only (so connecting to ``127.0.0.1`` and checking the hostname fails), a client certificate
whose common name is the broker user that EXTERNAL login logs in as, and a second, unknown CA
with a client certificate of its own (a client the node does not know).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import attrs

#: Days the certificates are valid.
DAYS = "2"


@attrs.frozen
class KeyPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@attrs.frozen
class TLSFiles:
    """The files of one TLS test setup.

    Attributes:
        ca: the CA that signed the server's and the client's certificates.
        server: the server's certificate, for DNS name ``localhost`` only.
        client: a client certificate signed by ``ca``; its CN is ``client_user``.
        client_user: the broker user EXTERNAL login maps the client certificate to.
        other_ca: a CA the node does not know.
        other_client: a client certificate signed by ``other_ca`` (an unknown client).
        stranger: a client certificate signed by ``ca`` whose CN names no broker user.
    """

    ca: Path
    server: KeyPair
    client: KeyPair
    client_user: str
    other_ca: Path
    other_client: KeyPair
    stranger: KeyPair


def _openssl(*args: str | Path, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed; it makes the TLS tests' certificates")
    result = subprocess.run(
        [openssl, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}"
        )


def _ca(directory: Path, name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
        "-subj", f"/CN={name}", "-keyout", pair.key, "-out", pair.cert,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return pair


def _signed(directory: Path, ca: KeyPair, name: str, common_name: str, extensions: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extfile = directory / f"{name}.ext"
    extfile.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}",
        "-keyout", pair.key, "-out", request,
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-days", DAYS, "-out", pair.cert, "-extfile", extfile,
        cwd=directory,
    )  # fmt: skip
    pair.key.chmod(0o644)  # the node runs as this user; readable keeps it simple in a temp dir
    return pair


def make_tls_files(directory: Path) -> TLSFiles:
    """Make a CA, server and client certificates, and an unknown CA's client, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    user = f"ec-tls-{secrets.token_hex(4)}"
    ca = _ca(directory, "ca")
    other_ca = _ca(directory, "other-ca")
    server = _signed(
        directory,
        ca,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = _signed(directory, ca, "client", user, "extendedKeyUsage=clientAuth\n")
    other_client = _signed(
        directory, other_ca, "other-client", user, "extendedKeyUsage=clientAuth\n"
    )
    stranger = _signed(directory, ca, "stranger", f"{user}-nobody", "extendedKeyUsage=clientAuth\n")
    return TLSFiles(
        ca=ca.cert,
        server=server,
        client=client,
        client_user=user,
        other_ca=other_ca.cert,
        other_client=other_client,
        stranger=stranger,
    )
