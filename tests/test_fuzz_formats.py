"""Property-based fuzzing of every body format over real HTTP (hypothesis) against the installed plugin under the
emulated host: strategies in tests/fuzz/strategies.py, oracles in tests/fuzz/oracles.py, the runs in
tests/fuzz/runner.py, the plugin in the ``fuzz`` fixture (tests/conftest.py).

One plugin process serves one source per format (json, delimited with fields, urlencoded, binary, protobuf with a
small recursive schema, custom via the shipped ``kv:decode``, NDJSON by Content-Type, compressed JSON). What is
checked, for every request:

* the status is one the promise allows: 200, 400 or 413 (415 for a Content-Encoding the server does not speak; a
  custom decoder whose output is not JSON the host can read would get 500, but the shipped ``kv:decode`` fuzzed here
  must never), and it is the status an independent oracle of the documented format rules expects;
* every non-2xx answer is JSON ``{"error": "<text>"}`` naming the problem;
* every 200's ``accepted`` is the oracle's record count, and exactly those records — equal to the oracle's — arrive
  on the format's channel, in order, once; each envelope is JSON Go's ``encoding/json`` reads into
  ``map[string]any`` (valid UTF-8, no lone surrogates, no NaN/Infinity, every number a finite float64);
* nothing of a refused body arrives: each format's run ends with a sentinel that must be the next record;
* the cost oracle: the plugin process's CPU for each batch stays within a bound linear in the batch's bytes
  (``runner.CPU_PER_BATCH_S`` + ``runner.CPU_PER_BYTE_S`` a byte): generous, but a decoder quadratic in its body, or
  one paying microseconds per byte, breaks it. The summary shows each format's CPU per byte.

Requests are pipelined on one keep-alive connection per format, a batch of 50 bodies per hypothesis example, so the
HTTP round trip of a case costs a fraction of a millisecond (generating the structured bodies costs more).
``HTTPPUSH_FUZZ_EXAMPLES`` (default 205: 10,250 cases per format) sets the examples for a quick look.
"""

from __future__ import annotations

import pytest

from tests.fuzz.runner import Fuzz, run_format
from tests.fuzz.strategies import STRATEGIES


@pytest.mark.parametrize("fmt", list(STRATEGIES))
def test_format_fuzz(fuzz: Fuzz, fmt: str) -> None:
    """At least 10,000 bodies per format over real HTTP: each answer as the oracle says, each 2xx'd record
    delivered once, in order, readable by Go; nothing of a refused body delivered (sentinel)."""
    run_format(fuzz, fmt, STRATEGIES[fmt])
