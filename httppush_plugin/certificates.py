"""The server's TLS material (``httpServerTls``), reloaded without a restart.

The server listens with one :class:`ssl.SSLContext` for its whole life (asyncio and uvloop take it once, at
``create_server``). Its ``sni_callback`` — which OpenSSL calls in every handshake, whether the client sent a server
name or not — hands the connection the context of the set loaded last (``ssl_object.context = current``): the
certificate, its key and the CAs client certificates are checked against all come from that one. Connections
already open keep the context of their handshake, so nothing open is cut, and no rule is restarted.

Every ``reloadInterval`` seconds :meth:`Certificates.look`, in a worker thread (server.py: parsing a CA bundle can
take tens of milliseconds), stats the three files (device, inode, size, mtime); when that changed it hashes their
content, and when that changed it loads the set into a new context. Only a set that loads whole is switched to: a
certificate renewed before its key (a mismatch), a half-written file or a CA file that no longer parses keeps the
set in use, is logged and shows in ``/metrics`` (``httppush_tls_reload_failing``), and is tried again when the files
change again.

Example::

    certs = Certificates(tls)                      # raises ConfigError when the files are unusable
    server = await loop.create_server(..., ssl=certs.listening)
    certs.look()                                   # True when a new set was switched to
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time

from .errors import ConfigError
from .tlsconfig import TlsConfig

log = logging.getLogger(__name__)


def load_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context with ``tls``'s certificate, key and (client certificates wanted) CA file; raises
    :class:`ConfigError` naming the file that is unusable."""
    # A server-side default context trusts no CA (it loads the system's only for verifying servers), so with
    # client certificates only ``cafile`` can vouch for them.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS certificate {tls.certfile!r} / key {tls.keyfile!r} unusable: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if tls.client_auth != "none":
        try:
            context.load_verify_locations(cafile=tls.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"CA file {tls.cafile!r} (httpServerTls.cafile) unusable: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "required" else ssl.CERT_OPTIONAL
    return context


class Certificates:
    """The set in use (:attr:`current`), the context the server listens with (:attr:`listening`), and the counts
    ``/metrics`` shows."""

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self._files = [tls.certfile, tls.keyfile] + ([tls.cafile] if tls.client_auth != "none" else [])
        self._stamp = self._stat()
        self._digest = self._hash()
        self.current = load_context(tls)
        self.listening = load_context(tls)  # verify mode and session settings of every connection: fixed
        self.listening.sni_callback = self._switch
        if tls.client_auth != "none":
            # No TLS 1.3 tickets and no TLS 1.2 tickets: a session resumed from one would skip the client
            # certificate's check against the CA file in use now (the tickets' keys belong to this context).
            self.listening.num_tickets = 0
            self.listening.options |= ssl.OP_NO_TICKET
        self.loaded_at = time.time()
        #: when the CA file in use was loaded: a session begun before it was checked against another CA
        self.trusted_at = self.loaded_at
        self.reloads = 0  # sets switched to since the start
        self.failures = 0  # sets that failed to load
        self.failing = ""  # why the files on disk now are not in use ("" when they are)

    def _switch(self, ssl_object: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        ssl_object.context = self.current

    def stale(self, ssl_object: ssl.SSLObject | None) -> bool:
        """Whether a connection just made resumed a TLS session begun before the CA file in use was loaded, while
        client certificates are checked: its certificate was checked against a CA file no longer in use, so it must
        make a full handshake; a renewed certificate or key alone changes no client's check, so such sessions go on.
        (TLS 1.3 tickets are off then; TLS 1.2 session ids cannot be switched off from Python: the listening context
        caches them.) A session begun in the same second as the load, before it, is let through: OpenSSL keeps a
        session's time in whole seconds."""
        if self.tls.client_auth == "none" or ssl_object is None or not ssl_object.session_reused:
            return False
        session = ssl_object.session
        if session is None or session.time >= int(self.trusted_at):
            return False
        log.info("a TLS session resumed from before the CA file in use was loaded: connection closed, the client "
                 "must make a full handshake")
        return True

    def look(self) -> bool:
        """Look at the files once; load and switch to a changed set that loads. Returns whether it switched."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        digest = self._hash()
        if digest == self._digest:  # touched, or replaced by the same bytes
            if self.failing:
                self.failing = ""  # back to the set in use
            return False
        try:
            if digest is None:
                raise ConfigError("a file is missing or unreadable: " + ", ".join(
                    f"{path!r} ({problem})" for path, problem in self._unreadable()))
            context = load_context(self.tls)
        except ConfigError as exc:
            self.failures += 1
            self.failing = str(exc)
            log.warning("httpServerTls: the changed files are not used, the set loaded before is kept (tried again "
                        "when they change): %s", exc)
            return False
        self.loaded_at = time.time()
        # the CA file changed (or any file while it was loaded: what was loaded is unknown, so as if it had)
        if self._digest is None or digest[2:] != self._digest[2:] or self._hash() != digest:
            self.trusted_at = self.loaded_at  # before the switch: stale() never sees the new CA with the old time
        self.current, self._digest = context, digest
        self.failing = ""
        self.reloads += 1
        log.info("httpServerTls: new certificate set loaded from %s; new connections use it", ", ".join(self._files))
        return True

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The gauges of ``/metrics`` about the TLS set, read now."""
        return {
            "httppush_tls_reloads": ("Certificate sets (httpServerTls files) switched to since the server started.",
                                     self.reloads),
            "httppush_tls_reload_failures": ("Changed httpServerTls files that could not be loaded (the set in use "
                                             "was kept) since the server started.", self.failures),
            "httppush_tls_reload_failing": ("1 when the httpServerTls files on disk now could not be loaded and an "
                                            "older set is served (see the log), else 0.", 1 if self.failing else 0),
            "httppush_tls_loaded_timestamp_seconds": ("When the certificate set in use was loaded (Unix time).",
                                                      self.loaded_at),
        }

    def _stat(self) -> list[tuple[int, ...] | str]:
        stamps: list[tuple[int, ...] | str] = []
        for path in self._files:
            try:
                st = os.stat(path)
            except OSError as exc:
                stamps.append(exc.strerror or str(exc))
            else:
                stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return stamps

    def _hash(self) -> list[bytes] | None:
        """Each file's SHA-256 (certificate, key, CA file when client certificates are checked)."""
        digests = []
        for path in self._files:
            try:
                with open(path, "rb") as file:
                    digests.append(hashlib.sha256(file.read()).digest())
            except OSError:
                return None
        return digests

    def _unreadable(self) -> list[tuple[str, str]]:
        found = []
        for path in self._files:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                found.append((path, exc.strerror or str(exc)))
        return found
