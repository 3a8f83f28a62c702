"""An :class:`~.answers.Answer` as HTTP/1.1 bytes: one buffer, written with one ``transport.write``.

Status lines come from :class:`http.HTTPStatus` (an unknown status is a bug, not a quiet 500). Every answer but a 204
has a ``Content-Length``; a 204 (``successStatus: 204``, a CORS preflight) has neither body nor length (RFC 9110
§8.6). An answer to ``HEAD`` has the length of the body it does not carry.

Example: ``encode(Answer(200, b'{}'), b"Date: …\\r\\n", close=True)`` → ``b"HTTP/1.1 200 OK\\r\\nContent-Type:
application/json\\r\\nContent-Length: 2\\r\\nDate: …\\r\\nConnection: close\\r\\n\\r\\n{}"``.
"""

from __future__ import annotations

from http import HTTPStatus

from .answers import Answer

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_JSON = b"application/json"
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``; a status without a registered phrase gets an empty one (RFC 9112 §4
    allows it): writing an answer never fails."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


def encode(answer: Answer, date: bytes, close: bool = False, http10: bool = False, head_only: bool = False) -> bytes:
    """The whole answer: ``close`` adds ``Connection: close``; an HTTP/1.0 client kept alive is told so. A plain
    answer (no extra headers, kept alive, HTTP/1.1, not HEAD) is encoded once per ``date``: the shared success
    answers are written thousands of times a second."""
    plain = not (close or http10 or head_only or answer.headers)
    if plain:
        cached = answer.wire
        if cached is not None and cached[0] is date:
            return cached[1]
    extra = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                     for name, value in answer.headers.items()) if answer.headers else b""
    if close:
        extra += _CLOSE
    elif http10:
        extra += _KEEP_ALIVE
    status = answer.status
    line = _STATUS_LINES.get(status) or status_line(status)
    if status == 204:
        data = b"%s%s%s\r\n" % (line, date, extra)
    else:
        body = answer.body
        data = b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
            line, answer.content_type.encode() if answer.content_type else _JSON, len(body), date, extra,
            b"" if head_only else body)
    if plain:
        answer.wire = (date, data)
    return data
