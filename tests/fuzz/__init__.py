"""The fuzzers' parts, combined by the test modules tests/test_fuzz_formats.py and tests/test_fuzz_raw_http.py:

* :mod:`tests.fuzz.server` — the fuzzed plugin's settings (small limits, short timeouts) and endpoints;
* :mod:`tests.fuzz.strategies` — hypothesis strategies: bodies per format, raw HTTP request bytes;
* :mod:`tests.fuzz.oracles` — what the plugin must answer and emit for a given input (the documented format rules,
  written independently, and Go's rules for what eKuiper can read);
* :mod:`tests.fuzz.runner` — the plugin under fuzz, a strict data channel, a pipelining client, and the runs.

The idempotency fuzz (keyed request sequences against their own small oracle) lives with the other idempotency tests
in tests/test_idempotency.py.
"""
