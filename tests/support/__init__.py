"""Helpers shared by the test modules, each with one home (test modules import from here, never from each other):

* :mod:`tests.support.http`: HTTP to the plugin — :func:`~tests.support.http.push` (one request, parsed answer),
  :func:`~tests.support.http.sender` (how a known good body is pushed to one endpoint), the byte-level
  :class:`~tests.support.http.RawClient`, and :func:`~tests.support.http.parse_response`, the one reader of raw HTTP
  responses;
* :mod:`tests.support.wait`: :func:`~tests.support.wait.wait_until`, the one way to wait for observable state;
* :mod:`tests.support.metrics`: the plugin's ``/metrics`` parsed (samples, gauges);
* :mod:`tests.support.sentinel`: "nothing else arrived", checked with a sentinel record — on the emulated host's data
  channels and in the real host's record sink;
* :mod:`tests.support.pki`: what a TLS test configures from the session's openssl PKI (the ``pki`` fixture);
* :mod:`tests.support.pythons`: the pyenv interpreters and the CI policy of the tests that need them;
* :mod:`tests.support.protobuf`: a message class compiled from a ``.proto`` file the way the plugin compiles it.

The emulated host lives in ``tests/hostemu.py``, the real host's per-test helpers in ``tests/realhost_support.py``,
fixtures in ``tests/conftest.py``, and the fuzzers' strategies and oracles in ``tests/fuzz/``.
"""
