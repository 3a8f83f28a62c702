"""The TLS material the tests use, made once per session by ``openssl`` (the ``pki`` fixture in tests/conftest.py):
a certificate authority, a server certificate it signed for ``localhost`` and ``127.0.0.1``, a client certificate it
signed, and a client certificate with the same name signed by ANOTHER authority (which a server verifying clients must
refuse). Keys are P-256 (fast to make); the authorities are conforming CAs, since Python 3.13's default contexts
verify strictly (``VERIFY_X509_STRICT``).

What a test configures from it: :func:`tls_env` (a TLS server), :func:`mtls_env` (one that asks for client
certificates), :func:`client_context` (a client trusting the authority, with or without a certificate of its own).
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The client certificates' common name (``meta(user)`` of a ``clientcert`` endpoint).
CLIENT_CN = "gateway-9"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client: tuple[Path, Path]  # signed by ca, CN=gateway-9
    stranger: tuple[Path, Path]  # CN=gateway-9 too, signed by another CA
    other: tuple[Path, Path]  # signed by ca, CN=gateway-10
    two_names: tuple[Path, Path]  # signed by ca, /O=httppush tests/CN=alice/CN=admin: two common names


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _signed(folder: Path, name: str, cn: str, ca: tuple[Path, Path], extensions: str,
            subject: str = "") -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr",
                           folder / f"{name}.ext")
    ext.write_text(extensions)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             str(key), "-out", str(csr), "-subj", subject or f"/O=httppush tests/CN={cn}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial", "-out",
             str(cert), "-days", "1", "-extfile", str(ext))
    return cert, key


def make_pki(folder: Path) -> Pki:
    """Every certificate and key of :class:`Pki`, written to ``folder``."""
    ca, other = _ca(folder, "test-ca"), _ca(folder, "other-ca")
    server = _signed(folder, "server", "localhost", ca, "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                     "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    return Pki(ca[0], server[0], server[1], _signed(folder, "client", CLIENT_CN, ca, client_ext),
               _signed(folder, "stranger", CLIENT_CN, other, client_ext),
               _signed(folder, "other", "gateway-10", ca, client_ext),
               _signed(folder, "two-names", "", ca, client_ext, "/O=httppush tests/CN=alice/CN=admin"))


def tls_env(pki: Pki) -> dict[str, str]:
    """The plugin's environment for a TLS server with the PKI's server certificate (no client certificates)."""
    return {"PYHTTPPUSH_TLS_CERTFILE": str(pki.server_cert), "PYHTTPPUSH_TLS_KEYFILE": str(pki.server_key)}


def mtls_env(pki: Pki, client_auth: str | None = None) -> dict[str, str]:
    """:func:`tls_env` plus the authority clients' certificates are verified against; ``client_auth`` (none,
    optional, required) as ``PYHTTPPUSH_TLS_CLIENT_AUTH`` when given (a cafile alone means required)."""
    env = {**tls_env(pki), "PYHTTPPUSH_TLS_CAFILE": str(pki.ca)}
    if client_auth is not None:
        env["PYHTTPPUSH_TLS_CLIENT_AUTH"] = client_auth
    return env


def client_context(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client context trusting the PKI's authority, presenting ``cert`` (e.g. ``pki.client``) when given."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def openssl_subject(cert: Path) -> str:
    """The certificate's subject as ``openssl x509 -noout -subject -nameopt RFC2253`` prints it (RFC 4514 text)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(cert)],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().removeprefix("subject=").strip()


@dataclass(frozen=True)
class Rotation:
    """What a certificate rotation puts in place of :class:`Pki`'s files: a second server certificate (same
    authority, another serial and key), and a second client authority with a client certificate it signed."""

    server_cert: Path
    server_key: Path
    ca: Path  # the new client authority
    client: tuple[Path, Path]  # signed by ca, CN=gateway-9


def make_rotation(folder: Path, pki: Pki) -> Rotation:
    """A :class:`Rotation` for ``pki``, written to ``folder`` (the original authority's key is next to its
    certificate)."""
    ca_key = pki.ca.with_suffix(".key")
    server = _signed(folder, "server2", "localhost", (pki.ca, ca_key), "basicConstraints=CA:FALSE\n"
                     "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    new_ca = _ca(folder, "new-client-ca")
    client = _signed(folder, "client2", CLIENT_CN, new_ca, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return Rotation(server[0], server[1], new_ca[0], client)


def serial_of(cert: Path) -> int:
    """The certificate's serial number, as ``openssl x509 -serial`` prints it."""
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(cert)], check=True, capture_output=True,
                         text=True).stdout
    return int(out.strip().split("=", 1)[1], 16)
