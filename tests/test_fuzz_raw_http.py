"""Property-based fuzzing of the HTTP/1.x server itself (hypothesis) against the installed plugin under the
emulated host: request lines, header sets, chunked framings, garbage and pipelines built by tests/fuzz/strategies.py
(``RAW_CASES``), sent 40 connections at a time by tests/fuzz/runner.py (``raw_fuzz``), each answer checked by
tests/fuzz/oracles.py (``check_raw_answers``).

The server answers with well-formed HTTP/1.1 JSON answers or closes, within its timeouts (1 s header and body, 2 s
idle), never with a 5xx other than 505 for an unsupported version; it delivers exactly what its 200s accepted, to
``/f/raw`` only, and keeps serving. ``HTTPPUSH_FUZZ_RAW_EXAMPLES`` and ``HTTPPUSH_FUZZ_HELD_EXAMPLES`` set the
examples (default 100 and 10 batches of 40).
"""

from __future__ import annotations

import os

from tests.fuzz.runner import Fuzz, raw_fuzz


def test_raw_http_fuzz(fuzz: Fuzz) -> None:
    """Hypothesis-built request bytes (request lines, header sets, chunked framings, garbage, pipelines), each on a
    fresh connection that we shut after sending, 40 at a time: the server answers with whole HTTP/1.1 JSON answers
    or closes, never with a 5xx (505 only for a version it does not speak), closes every connection within its
    timeouts, delivers exactly what its 200s accepted, and serves a normal request after."""
    raw_fuzz(fuzz, "raw-http", int(os.environ.get("HTTPPUSH_FUZZ_RAW_EXAMPLES", "100")), hold=False)


def test_raw_http_fuzz_held_open(fuzz: Fuzz) -> None:
    """The same, but our side stays open: the server's own timeouts (1 s header and body, 2 s idle) must close every
    connection, whatever half-request it holds."""
    raw_fuzz(fuzz, "raw-http-held", int(os.environ.get("HTTPPUSH_FUZZ_HELD_EXAMPLES", "10")), hold=True)
