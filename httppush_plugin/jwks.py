"""The public keys ``auth: {type: jwt}`` verifies tokens with: a JSON Web Key Set (RFC 7517) from a local file
(``jwks``) and/or a URL (``jwksUrl``), with a bounded refresh.

- The file is read when the source starts (a rule restart reads it again). A file that is missing, is not a JWKS, or
  holds a symmetric (``oct``) key is a :class:`ConfigError`.
- The URL is fetched when the source starts, in the thread eKuiper's start command runs in (never the event loop),
  within :data:`FETCH_TIMEOUT_S` in all (connecting, TLS, headers and body: a server that sends slowly is cut off
  then, see :func:`_fetch_url`). When that fails, the start fails naming the URL — unless a file is configured too:
  then the plugin serves with the file's keys and logs a warning, and the URL is tried again as below.
- Afterwards the URL is fetched again in a worker thread, never on the event loop and never twice at once: when a
  token arrives and the last fetch is older than ``jwksRefresh`` seconds, and when a token names a key id (``kid``)
  the set does not hold — at most once per ``min(jwksRefresh, 10 s)``, so tokens with made-up kids cannot make the
  plugin fetch more often. Until a fetch succeeds the keys it had stay in use.
- A response over :data:`MAX_JWKS_BYTES` or with more than :data:`MAX_KEYS` keys is refused (logged; the old keys
  stay), and so is any answer but 200 or a body that is not a JWKS. Symmetric keys in a fetched set are skipped.

Example: ``KeySet(file="/etc/jwks.json").key("k1")`` → the JWK (a dict) whose ``kid`` is ``k1``, or ``None``.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .answers import printable
from .errors import ConfigError

log = logging.getLogger(__name__)

#: The largest JWKS the plugin reads, from the file or the URL.
MAX_JWKS_BYTES = 1 << 20
#: The most keys a JWKS may hold.
MAX_KEYS = 100
#: Seconds one fetch of ``jwksUrl`` may take in all.
FETCH_TIMEOUT_S = 5.0
#: The shortest time between two fetches a token with an unknown ``kid`` may cause.
MIN_INTERVAL_S = 10.0
#: The asymmetric key types (``kty``) a JWKS may hold: RSA, elliptic curves, Ed25519/Ed448.
KEY_TYPES = ("RSA", "EC", "OKP")
_now = time.monotonic


class JwksError(ValueError):
    """A JWKS that cannot be used; the message names what is wrong with it."""


def parse_jwks(data: bytes, where: str, strict: bool = True) -> dict[str, dict[str, Any]]:
    """A JWKS's keys by ``kid`` (``""`` for the one key without a kid). ``strict`` (a file): a symmetric (``oct``) or
    unusable key is an error; else (a fetched set) it is skipped. Raises :class:`JwksError`."""
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"{where} is over {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise JwksError(f"{where} is not JSON: {exc}") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError(f"{where} is not a JSON Web Key Set: an object with a 'keys' list")
    if len(keys) > MAX_KEYS:
        raise JwksError(f"{where} has {len(keys)} keys; at most {MAX_KEYS}")
    found: dict[str, dict[str, Any]] = {}
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise JwksError(f"{where}: key #{index} is not an object")
        kty = jwk.get("kty")
        if jwk.get("use") not in (None, "sig"):
            continue  # an encryption key
        problem = ""
        if kty == "oct":
            problem = ("is symmetric (kty 'oct'); only public keys verify tokens here (HS256 and the like are "
                       "refused)")
        elif kty not in KEY_TYPES:
            problem = f"has kty {kty!r}; must be one of {', '.join(KEY_TYPES)}"
        else:
            import jwt  # here, not at the top: PyJWT and cryptography take ~0.2 s to import, only for type jwt

            try:
                jwt.PyJWK(jwk)
            except jwt.PyJWTError as exc:
                problem = f"cannot be used: {exc}"
        if problem:
            if strict:
                raise JwksError(f"{where}: key #{index} {problem}")
            log.warning("%s: key #%d %s; skipped", printable(where), index, printable(problem))
            continue
        kid = str(jwk.get("kid") or "")
        if kid in found:
            raise JwksError(f"{where}: two keys have the kid {kid!r}" if kid else f"{where}: more than one key has "
                            "no kid; a token could not say which")
        found[kid] = jwk
    return found


class KeySet:
    """The keys of a file and/or URL. The event loop reads :meth:`key`; fetches replace the whole mapping at once."""

    def __init__(self, file: str = "", url: str = "", refresh: float = 300.0) -> None:
        self.file, self.url, self.refresh = file, url, refresh
        self.min_interval = min(MIN_INTERVAL_S, refresh)
        self._file_keys: dict[str, dict[str, Any]] = self._read_file() if file else {}
        self._url_keys: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = dict(self._file_keys)
        #: bumped whenever :attr:`keys` changes (verifiers cache prepared keys per version)
        self.version = 0
        self._lock = threading.Lock()
        self._fetching = False
        self._fetched = self._tried = -float("inf")
        if url:
            self._tried = _now()
            try:
                self._install(self._fetch())
            except JwksError as exc:
                if not file:
                    raise ConfigError(f"property 'auth.jwksUrl': {exc}; the plugin cannot verify tokens without "
                                      "keys (add 'jwks', a local file, to start without the URL)") from None
                log.warning("%s; serving with the keys of %s until a fetch succeeds", printable(str(exc)), file)

    def key(self, kid: str) -> dict[str, Any] | None:
        keys = self.keys
        if not kid and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def tick(self) -> None:
        """Called for every token: fetch in the background when the last fetch is older than ``refresh`` seconds."""
        if self.url and _now() - self._fetched > self.refresh:
            self.fetch_soon()

    def fetch_soon(self) -> bool:
        """Start a fetch of the URL in a worker thread, unless one runs or the last began less than
        :attr:`min_interval` ago; ``True`` when a fetch is running (now or already)."""
        if not self.url:
            return False
        with self._lock:
            if self._fetching:
                return True
            if _now() - self._tried < self.min_interval:
                return False
            self._fetching, self._tried = True, _now()
        threading.Thread(target=self._fetch_in_thread, name="httppush-jwks", daemon=True).start()
        return True

    def _fetch_in_thread(self) -> None:
        try:
            self._install(self._fetch())
        except JwksError as exc:
            log.warning("%s; the %d keys fetched before stay in use", printable(str(exc)), len(self._url_keys))
        except Exception:  # a worker thread must not die silently
            log.exception("fetching %s failed", printable(self.url))
        finally:
            with self._lock:
                self._fetching = False

    def _install(self, keys: dict[str, dict[str, Any]]) -> None:
        self._url_keys, self._fetched = keys, _now()
        self.keys = {**self._file_keys, **keys}
        self.version += 1

    def _fetch(self) -> dict[str, dict[str, Any]]:
        where = f"the JWKS at {self.url}"
        return parse_jwks(_fetch_url(self.url, where), where, strict=False)

    def _read_file(self) -> dict[str, dict[str, Any]]:
        path = Path(self.file)
        if not path.is_absolute():
            raise ConfigError(f"property 'auth.jwks' is {self.file!r}; must be an absolute path to a JWKS file")
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"property 'auth.jwks': {self.file} cannot be read: {exc.strerror}") from None
        try:
            return parse_jwks(data, f"property 'auth.jwks': {self.file}")
        except JwksError as exc:
            raise ConfigError(str(exc)) from None


def _fetch_url(url: str, where: str) -> bytes:
    """The body of a 200 answer to GET ``url``, at most :data:`MAX_JWKS_BYTES` + 1 bytes, within
    :data:`FETCH_TIMEOUT_S` in all. ``urlopen``'s timeout bounds each socket operation only (a server sending a byte
    every few seconds would hold the fetch, and with it every later refresh, for ever), so a timer shuts the
    connection's sockets down at the deadline. Raises :class:`JwksError`."""
    sockets: list[socket.socket] = []
    expired = threading.Event()

    def connect(*args: Any, **kwargs: Any) -> socket.socket:
        sock = socket.create_connection(*args, **kwargs)
        watch = sock.dup()  # the same connection; TLS detaches ``sock`` itself when it wraps it
        sockets.append(watch)
        if expired.is_set():
            _shut(watch)
        return sock

    def cut() -> None:
        expired.set()
        for sock in sockets:
            _shut(sock)

    def watched(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        class Watched(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._create_connection = connect

        return Watched

    class Http(urllib.request.HTTPHandler):
        def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            return super().do_open(watched(http_class), req, **kwargs)

    class Https(urllib.request.HTTPSHandler):
        def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            return super().do_open(watched(http_class), req, **kwargs)

    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "httppush"})
    timer = threading.Timer(FETCH_TIMEOUT_S, cut)
    timer.daemon = True
    timer.start()
    try:
        with urllib.request.build_opener(Http, Https).open(request, timeout=FETCH_TIMEOUT_S) as answer:
            if answer.status != 200:
                raise JwksError(f"{where} answered HTTP {answer.status}")
            data = answer.read(MAX_JWKS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise JwksError(f"{where} answered HTTP {exc.code}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, TLS, a bad URL, cut off
        if expired.is_set():
            raise JwksError(f"{where} could not be fetched within {FETCH_TIMEOUT_S:g} s") from None
        raise JwksError(f"{where} could not be fetched: {exc}") from None
    finally:
        timer.cancel()
        for sock in sockets:
            sock.close()
    if expired.is_set():  # cut off while the body was read: what was read may look complete, and is not
        raise JwksError(f"{where} could not be fetched within {FETCH_TIMEOUT_S:g} s")
    return data


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already
