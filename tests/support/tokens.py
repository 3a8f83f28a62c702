"""JSON Web Tokens for the tests: signing keys with their public JWKs, key sets, tokens signed properly or forged.

Example: ``RSA_KEY.token(sub="device-7")`` → a signed RS256 token for :data:`ISSUER` and :data:`AUDIENCE`;
``write_jwks(path, RSA_KEY)`` → the path of a JWKS file holding its public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER, AUDIENCE = "https://idp.example.test/", "ekuiper-ingest"


class Key:
    """A signing key and its public JWK."""

    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        if kind == "RSA":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
            self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
            self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk["kid"] = kid

    def token(self, alg: str | None = None, kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "device-42", "iat": now, "exp": now + 300, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, self.private, algorithm=alg or self.alg,
                          headers={"kid": self.kid if kid is None else kid})

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


RSA_KEY, EC_KEY, OTHER = Key("k1"), Key("e1", "EC"), Key("k1")  # OTHER: another key under k1's kid


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.jwk for key in keys]}


def write_jwks(path: Path, *keys: Key) -> str:
    path.write_text(json.dumps(jwks(*keys)))
    return str(path)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(alg: str, payload: dict[str, Any], secret: bytes = b"", kid: str = "k1") -> str:
    """A token built by hand: ``none`` (no signature) or HS256 with ``secret`` (e.g. a public key's PEM)."""
    signing = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode()) + "." + b64(json.dumps(payload).encode())
    signature = b"" if alg == "none" else hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(signature)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "device-42", "exp": now + 300, **changes}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
