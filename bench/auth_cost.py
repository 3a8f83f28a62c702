#!/usr/bin/env python3
"""What the head-time checks of issue 16 cost per request, in µs, against a ``bearer`` token in the same run.

All run on the plugin's event-loop thread when a request's head is in:
  (1) ``bearer``: a SHA-256 and a constant-time compare (the baseline);
  (2) ``jwt`` with RS256 and ES256 keys: the token's header read, PyJWT's decode, the signature and claim checks;
  (3) ``jwt`` with an 8 KB token that is not a JWT: what a client sending junk makes the server do (refused from the
      header segment, before PyJWT);
  (4) ``rateLimit``: one client's take; and a new address each time against a full table of 10,000 busy clients
      (the scan of 16 buckets, the overflow bucket, the 429 built).

Usage: python bench/auth_cost.py [--number N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from httppush_plugin.answers import HttpError  # noqa: E402
from httppush_plugin.auth import parse_auth  # noqa: E402
from httppush_plugin.ratelimit import Buckets, RateLimit  # noqa: E402
from httppush_plugin.request import RequestHead  # noqa: E402


def head(authorization: str) -> RequestHead:
    return RequestHead("POST", "/j", b"/j", [(b"authorization", authorization.encode())], "application/json",
                       "127.0.0.1")


def best(fn: object, number: int) -> float:
    """µs per call, the best of 5 runs."""
    def call() -> None:
        try:
            fn()  # type: ignore[operator]
        except HttpError:
            pass
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=2000)
    number = parser.parse_args().number
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, key, algorithm in (("r", rsa_key, jwt.algorithms.RSAAlgorithm), ("e", ec_key, jwt.algorithms.ECAlgorithm)):
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"keys": keys}, handle)
    auth = parse_auth({"type": "jwt", "jwks": handle.name, "issuer": "i", "audience": "a"})
    bearer = parse_auth({"type": "bearer", "tokens": {"g": "tok-123456"}})
    assert auth is not None and bearer is not None
    claims = {"iss": "i", "aud": "a", "sub": "d", "exp": int(time.time()) + 3600}
    rs = head("Bearer " + jwt.encode(claims, rsa_key, "RS256", headers={"kid": "r"}))
    es = head("Bearer " + jwt.encode(claims, ec_key, "ES256", headers={"kid": "e"}))
    junk = head("Bearer " + "A" * 8000 + "." + "A" * 100 + "." + "A" * 80)
    token = head("Bearer tok-123456")
    one = Buckets(RateLimit(1e6, 10_000_000))
    full = Buckets(RateLimit(1, 5, max_clients=10_000))
    for n in range(10_000):
        full.take(f"10.0.{n // 256}.{n % 256}")
    fresh = iter(range(10**9))
    base = best(lambda: bearer.admit(token), number)
    rows = [("bearer (baseline)", base), ("jwt RS256", best(lambda: auth.admit(rs), number)),
            ("jwt ES256", best(lambda: auth.admit(es), number)),
            ("jwt, 8 KB of junk", best(lambda: auth.admit(junk), number)),
            ("rateLimit, one client", best(lambda: one.take("a"), number)),
            ("rateLimit, table full, new", best(lambda: full.take(f"2001:db8::{next(fresh):x}"), number))]
    for name, micros in rows:
        print(f"{name:28s} {micros:8.1f} µs  {micros / base:6.1f}x")


if __name__ == "__main__":
    main()
