"""Tooling shared by the tests, the benchmark and the demo: a real eKuiper (``realhost``), the one-host-at-a-time
lock (``hostlock``), loopback ports (``net``) and /proc readings of a process (``procstat``)."""
