"""``Content-Encoding``: compressed bodies, inflated as they arrive and bounded after inflation.

The connection feeds each piece of a compressed body to an :class:`Inflater` the moment it is read, telling it how
many inflated bytes the body may still grow by (``httpServerMaxBodySize`` less what it holds already). ``zlib``'s
``max_length`` stops inflating one byte past it, so a zip bomb — 10 MB of gzip that inflates to 10 GB — costs at
most the limit in memory before it is answered 413. The compressed bytes count against the same limit.

Example: ``inflater_for("gzip", 1024).feed(gzip.compress(b'{"a": 1}'), 0)`` → ``b'{"a": 1}'``;
``inflater_for("br", 1024)`` raises :class:`UnsupportedEncoding` (415).
"""

from __future__ import annotations

import zlib

from .answers import BadRequest, TooLarge, UnsupportedMediaType

#: ``Content-Encoding`` values served, and the ``wbits`` each starts ``zlib`` with (``deflate`` is settled by the
#: stream's first two bytes: see :meth:`Inflater._start_deflate`).
ENCODINGS: dict[str, int] = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: Most gzip members (streams back to back, RFC 1952 §2.2) one body may hold: each costs a new ``zlib`` stream; a
#: client that compresses its body in pieces makes a few, and no sane one makes a thousand.
MAX_GZIP_MEMBERS = 1000
#: Bytes handed to ``zlib`` at the start of each member (see :meth:`Inflater.feed`).
_FIRST_WINDOW = 256
#: Means "not encoded" (RFC 9110 §8.4.1).
IDENTITY = "identity"


class UnsupportedEncoding(UnsupportedMediaType):
    """415: a ``Content-Encoding`` the server does not speak."""


def inflater_for(content_encoding: str, limit: int) -> Inflater | None:
    """The inflater for a request's ``Content-Encoding`` value, for bodies of at most ``limit`` bytes inflated;
    ``None`` for ``identity`` (or nothing); raises :class:`UnsupportedEncoding` for any other, and for a list of
    several (``gzip, gzip``)."""
    name = content_encoding.strip().lower()
    if not name or name == IDENTITY:
        return None
    if name not in ENCODINGS:
        supported = ", ".join(name for name in ENCODINGS if not name.startswith("x-"))
        raise UnsupportedEncoding(f"Content-Encoding {content_encoding.strip()[:100]!r} is not supported; send the "
                                  f"body as is (identity) or encoded with one of: {supported}")
    return Inflater(name.removeprefix("x-"), limit)


class Inflater:
    """One request body's ``zlib`` stream. :meth:`feed` each piece as it arrives, :meth:`finish` at the end."""

    __slots__ = ("name", "limit", "_zlib", "_head", "_window", "members")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._zlib: zlib._Decompress | None = zlib.decompressobj(ENCODINGS[name]) if name == "gzip" else None
        self._head = b""  # deflate: the first byte, until the second settles zlib or raw
        self.members = 1  # gzip: the members begun so far
        self._window = 1 << 62  # the input handed to zlib at once: all of it, until a second member begins (feed)

    def feed(self, data: bytes, held: int) -> bytes:
        """The inflated bytes of ``data``, the body holding ``held`` inflated bytes already; raises :class:`TooLarge`
        once it would grow past ``limit`` or past :data:`MAX_GZIP_MEMBERS` members, and :class:`BadRequest` for a
        corrupt stream."""
        stream = self._zlib
        if stream is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            stream = self._start_deflate(data)
        room = self.limit - held
        out: list[bytes] = []
        # The input is walked by offset, handed to zlib a window at a time: at a member's end zlib copies what is
        # left of its input into ``unused_data``, so the window bounds that copy (handing it all the rest would make
        # a body of many tiny members cost its length squared). From the second member on, the window starts small
        # at each member and doubles while the member goes on: a member costs O(its size), a large one O(log) calls.
        # The first member (most bodies have one) gets all the input at once.
        view, offset, window = memoryview(data), 0, self._window
        while offset < len(data):
            if stream.eof:  # gzip allows several members back to back (RFC 1952 §2.2); deflate one stream
                if self.name != "gzip":
                    raise BadRequest("the deflate body goes on after its compressed stream ends")
                self.members += 1
                if self.members > MAX_GZIP_MEMBERS:
                    raise TooLarge(f"body has more than {MAX_GZIP_MEMBERS} gzip members (streams back to back); "
                                   f"the limit is {MAX_GZIP_MEMBERS} (Content-Encoding gzip)")
                stream = self._zlib = zlib.decompressobj(ENCODINGS["gzip"])
                window = _FIRST_WINDOW
            piece_in = view[offset:offset + window]
            try:
                piece = stream.decompress(piece_in, room + 1)
            except zlib.error as exc:
                raise BadRequest(f"the body is not valid {self.name} (Content-Encoding): {exc}") from None
            room -= len(piece)
            if room < 0:
                raise TooLarge(f"body inflates to over {self.limit} bytes, the limit (httpServerMaxBodySize; "
                               f"Content-Encoding {self.name})")
            if piece:
                out.append(piece)
            # what zlib did not take: left over past a member's end, or held back by max_length (room ran out)
            offset += len(piece_in) - len(stream.unused_data) - len(stream.unconsumed_tail)
            window *= 2
        self._window = window
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> None:
        """The body is complete: its compressed stream must be too (nothing sent at all is an empty body)."""
        if self._zlib is None and not self._head:
            return
        if self._zlib is None or not self._zlib.eof:
            raise BadRequest(f"the {self.name} body ends before its compressed stream does (Content-Encoding)")

    def _start_deflate(self, head: bytes) -> zlib._Decompress:
        """``deflate`` is meant to be a zlib stream (RFC 9110 §8.4.1.2), but some clients send raw deflate; a zlib
        stream starts with a header whose first byte names method 8 and whose first two bytes are a multiple of 31
        (RFC 1950 §2.2). A raw stream's first byte rarely looks like that: its low bits are a block header."""
        zlib_header = head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0
        self._zlib = stream = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        self._head = b""
        return stream
