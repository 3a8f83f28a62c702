"""The machinery of the fuzz runs against the installed plugin under the emulated host: one plugin process with one
source per format (:func:`start_fuzz`), a data channel that checks every envelope by Go's rules
(:class:`StrictChannel`), a pipelining keep-alive client (:class:`Pipeline`), and the runs themselves —
:func:`run_format` (hypothesis batches of bodies to one format, each checked against its oracle) and :func:`raw_fuzz`
(hypothesis-built request bytes on many connections at once).
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.net import free_port
from harness.procstat import cpu_seconds
from tests.fuzz.oracles import (
    SENTINELS,
    Expect,
    KvOracle,
    ProtobufOracle,
    check_answer,
    check_raw_answers,
    go_json_problem,
    oracle_binary,
    oracle_compressed,
    oracle_delimited,
    oracle_json,
    oracle_ndjson,
    oracle_urlencoded,
)
from tests.fuzz.server import (
    BATCH,
    BATCHES,
    CONTENT_TYPES,
    ENDPOINTS,
    EXAMPLES,
    FORMAT_CONTENT_TYPES,
    PROTO,
    RAW_BOUND_S,
    SERVER_ENV,
    Body,
)
from tests.fuzz.strategies import RAW_CASES
from tests.hostemu import DataChannel, HostError, PluginHost, loopback_env
from tests.support.http import Answer, parse_response, request, sender
from tests.support.sentinel import assert_sentinel_next_on_channels


@dataclass
class StrictChannel(DataChannel):
    """The host's PULL side, checking every envelope by Go's rules: what Go could not read goes to :attr:`invalid`
    (eKuiper would log "Invalid data format" and drop it) instead of reaching :meth:`take`; records keep their raw
    envelope under ``"raw"``."""

    invalid: list[tuple[bytes, str]] = field(default_factory=list)

    def accept(self, raw: bytes) -> None:
        problem = go_json_problem(raw)
        if problem is not None:
            self.invalid.append((raw[:500], problem))
            return
        envelope = json.loads(raw)
        self.records.put({"message": envelope["message"], "meta": envelope.get("meta"), "raw": raw})

    def drain(self, settle: float = 0.5) -> int:
        """Throw away whatever arrives until nothing has for ``settle`` seconds; how many records that was."""
        count = 0
        while True:
            try:
                self.records.get(timeout=settle)
                count += 1
            except Exception:
                return count


def start_strict(host: PluginHost, rule_id: str, op_id: str, props: dict[str, Any]) -> StrictChannel:
    """``host.start_source`` with a :class:`StrictChannel` on the data channel."""
    channel = host.start_source(rule_id, op_id, props, channel_type=StrictChannel)
    assert isinstance(channel, StrictChannel), channel
    return channel


# -- a pipelining keep-alive client ---------------------------------------------------------------------------------

def read_some(sock: socket.socket, size: int) -> bytes | None:
    """What a non-blocking socket has for us: bytes, ``b""`` once the server closed (or reset) the connection, or
    ``None`` when nothing is there yet."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class Pipeline:
    """One keep-alive connection; :meth:`exchange` sends requests pipelined and returns their answers in order.
    When the server closes the connection (after an answer with ``Connection: close``, e.g. a 413 refused by its
    ``Content-Length``, or an idle timeout between batches), the requests it did not answer are sent again on a new
    connection: an unanswered request on a closed connection was not processed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.connections = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self) -> socket.socket:
        if self.sock is not None:  # closed by the server while idle? then start afresh
            try:
                if self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    self.close()
            except BlockingIOError:
                pass
            except OSError:
                self.close()
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            self.sock.setblocking(False)
            self.connections += 1
        return self.sock

    def exchange(self, requests: list[bytes], timeout: float = 30.0) -> list[Answer]:
        answers: list[Answer] = []
        deadline = time.monotonic() + timeout
        fruitless = 0
        while len(answers) < len(requests):
            got = self._round(requests[len(answers):], deadline)
            answers.extend(got)
            if len(answers) < len(requests):
                self.close()
                fruitless = 0 if got else fruitless + 1
                if fruitless > 2:
                    raise AssertionError(f"the server closed {fruitless} fresh connections without answering")
        return answers

    def _round(self, requests: list[bytes], deadline: float) -> list[Answer]:
        sock = self._connect()
        out = memoryview(b"".join(requests))
        buf = b""
        answers: list[Answer] = []
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while len(answers) < len(requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(requests) - len(answers)} of {len(requests)} pipelined requests "
                                         f"unanswered at the deadline; received {buf[:200]!r}")
                for _, events in sel.select(min(remaining, 1.0)):
                    if events & selectors.EVENT_WRITE and out:
                        try:
                            out = out[sock.send(out[:262144]):]
                        except BlockingIOError:
                            pass
                        except OSError:
                            out = out[:0]  # the server closed; what it answered is still readable
                        if not out:
                            sel.modify(sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        data = read_some(sock, 1 << 20)
                        if data is None:
                            continue
                        if not data:
                            self.close()
                            return answers
                        buf += data
                        while True:
                            parsed = parse_response(buf, strict=True)
                            if parsed is None:
                                break
                            answer, used = parsed
                            buf = buf[used:]
                            answers.append(answer)
                            if answer.closes:
                                self.close()
                                return answers
            if buf:
                raise AssertionError(f"bytes after the last answer: {buf[:200]!r}")
            return answers
        finally:
            sel.close()


def fuzz_request(path: str, case: Body, content_type: bytes | None) -> bytes:
    """One POST of ``case`` with ``content_type`` (None: no header) and its ``Content-Encoding``, if any; header
    values are bytes as sent (a latin-1 byte included)."""
    headers = {name: value.decode("latin-1") for name, value in (("Content-Type", content_type),
                                                                 ("Content-Encoding", case.encoding))
               if value is not None}
    return request("POST", path, case.data, headers=headers)


# -- the plugin under fuzz --------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What one format's (or raw run's) cases did, for the summary."""

    cases: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    records: int = 0
    cpu: float = 0.0
    bytes: int = 0


#: The cost oracle: the plugin's CPU for one batch of requests may be at most this much, plus CPU_PER_BYTE_S for each
#: byte sent. Generous (a batch of 50 costs ~20 ms, about 0.3 µs a byte, on a loaded 2-core machine), yet a decoder
#: that is quadratic in a 64 KiB body, or pays microseconds per byte (as NDJSON once did per blank line), breaks it.
CPU_PER_BATCH_S = 0.25
CPU_PER_BYTE_S = 1e-6


def check_cost(fmt: str, cpu: float, nbytes: int, tally: Tally) -> None:
    tally.cpu += cpu
    tally.bytes += nbytes
    bound = CPU_PER_BATCH_S + CPU_PER_BYTE_S * nbytes
    assert cpu <= bound, f"{fmt}: the plugin spent {cpu:.2f} s of CPU on a batch of {nbytes} bytes (bound {bound:.2f})"


@dataclass
class Fuzz:
    """The plugin under fuzz: its host, port, one strict channel and one oracle per format, one pipelining client per
    format, and the tallies."""

    host: PluginHost
    port: int
    channels: dict[str, StrictChannel]
    oracles: dict[str, Callable[..., Expect]]
    pipes: dict[str, Pipeline] = field(default_factory=dict)
    tallies: dict[str, Tally] = field(default_factory=dict)

    def run(self, fmt: str, items: list[bytes | Body]) -> None:
        """Pipeline ``items`` to ``fmt``'s endpoint; check every answer against the oracle and the records that
        arrive against the 200s."""
        path = ENDPOINTS[fmt]["datasource"]
        cases = [item if isinstance(item, Body) else Body(item) for item in items]
        type_list = FORMAT_CONTENT_TYPES.get(fmt, CONTENT_TYPES)
        types = [type_list[i % len(type_list)] for i in range(len(cases))]
        pipe = self.pipes.setdefault(fmt, Pipeline(self.port))
        requests = [fuzz_request(path, case, ct) for case, ct in zip(cases, types, strict=True)]
        cpu = cpu_seconds(self.host.process.pid)
        answers = pipe.exchange(requests)
        cpu = cpu_seconds(self.host.process.pid) - cpu
        tally = self.tallies.setdefault(fmt, Tally())
        tally.cases += len(cases)
        check_cost(fmt, cpu, sum(map(len, requests)), tally)
        channel = self.channels[fmt]
        expected: list[tuple[dict[str, Any], bytes | None]] = []
        try:
            for case, content_type, answer in zip(cases, types, answers, strict=True):
                tally.statuses[answer.status] = tally.statuses.get(answer.status, 0) + 1
                oracle = self.oracles[fmt]
                expect = oracle(case.data) if case.encoding is None else oracle(case.data, case.encoding)
                check_answer(fmt, case, answer, expect)
                expected.extend((record, content_type) for record in expect.records if answer.status == 200)
            self.check_records(fmt, channel, path, expected)
            tally.records += len(expected)
        except BaseException:
            channel.drain()  # the next example starts from a quiet channel
            raise

    def check_records(self, fmt: str, channel: StrictChannel, path: str,
                      expected: list[tuple[dict[str, Any], bytes | None]]) -> None:
        try:
            got = channel.take(len(expected), timeout=20) if expected else []
        except HostError as exc:
            raise AssertionError(f"{fmt}: {exc}; envelopes Go cannot read: {channel.invalid[:3]}") from None
        for index, ((record, content_type), item) in enumerate(zip(expected, got, strict=True)):
            if item["message"] != record:
                raise AssertionError(f"{fmt}: record {index} of the batch arrived as {item['raw'][:300]!r}, "
                                     f"expected {str(record)[:300]}")
            ct = (content_type or b"").decode("latin-1")[:256]
            meta = {"method": "POST", "path": path, "remoteAddr": "127.0.0.1", "contentType": ct}
            if item["meta"] != meta:
                raise AssertionError(f"{fmt}: record {index}'s meta is {item['meta']}, expected {meta}")
        assert not channel.invalid, f"{fmt}: envelopes Go cannot read arrived: {channel.invalid[:3]}"
        assert not channel.dropped, f"{fmt}: non-object messages arrived: {channel.dropped[:3]}"


@contextmanager
def start_fuzz(installed: Path, host_python: str) -> Iterator[Fuzz]:
    """The installed plugin started under the emulated host with :data:`SERVER_ENV`, one strict source per
    :data:`ENDPOINTS` entry, and each format's oracle. At the end the plugin must be alive and have logged no
    traceback (a fuzz case that crashed a thread or the process counts as a failure)."""
    schema_dir = installed.parents[2] / "data" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True, exist_ok=True)
    proto = schema_dir / "fuzzsample.proto"
    proto.write_text(PROTO)
    port = free_port()
    host = PluginHost(installed, "pyhttppush", host_python, env=loopback_env(port, **SERVER_ENV))
    try:
        channels = {fmt: start_strict(host, f"fuzz{fmt}", f"s{fmt}", props) for fmt, props in ENDPOINTS.items()}
        oracles: dict[str, Callable[..., Expect]] = {
            "json": oracle_json, "delimited": oracle_delimited, "urlencoded": oracle_urlencoded,
            "binary": oracle_binary, "protobuf": ProtobufOracle(proto),
            "custom": KvOracle(installed / "decoders" / "kv.py"),
            "ndjson": oracle_ndjson, "compressed": oracle_compressed,
        }
        state = Fuzz(host, port, channels, oracles)
        yield state
        for pipe in state.pipes.values():
            pipe.close()
        host.assert_alive()
        log = host.log_text()
        assert "Traceback" not in log, f"the plugin logged a traceback:\n{log[-3000:]}"
    finally:
        host.close()


def summary(state: Fuzz) -> str:
    """Cases per format, wall time, statuses and records delivered: printed when the fuzzed plugin stops."""
    lines = ["fuzz summary (cases per format over real HTTP, wall time, statuses, records delivered):"]
    for fmt, tally in state.tallies.items():
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(tally.statuses.items()))
        lines.append(f"  {fmt:<13} {tally.cases:>6} cases in {tally.seconds:6.1f} s "
                     f"({tally.seconds / max(tally.cases, 1) * 1000:.2f} ms/case)  statuses {{{statuses}}}  "
                     f"records {tally.records}  plugin CPU {tally.cpu:.1f} s "
                     f"({tally.cpu / max(tally.bytes, 1) * 1e9:.0f} ns/byte)")
    return "\n".join(lines)


def assert_format_sentinel_next(state: Fuzz, fmt: str) -> None:
    """One more known good body on a new connection: its record must be the next one on the channel."""
    if fmt == "protobuf":
        oracle = state.oracles["protobuf"]
        assert isinstance(oracle, ProtobufOracle)
        body = oracle.cls(s="end-of-fuzz").SerializeToString()
        record = oracle.record(oracle.cls(s="end-of-fuzz"))
    else:
        body, record = SENTINELS[fmt]
    channel = state.channels[fmt]
    assert_sentinel_next_on_channels(sender(state.port, ENDPOINTS[fmt]["datasource"]), channel, body=body,
                                     record=record, timeout=10)
    assert not channel.invalid and not channel.dropped


def run_format(state: Fuzz, fmt: str, bodies: st.SearchStrategy[Any]) -> None:
    """EXAMPLES x BATCH bodies drawn from ``bodies`` to ``fmt``'s endpoint in hypothesis batches (:meth:`Fuzz.run`),
    then the format's sentinel."""
    size = BATCHES.get(fmt, BATCH)
    cases = EXAMPLES * BATCH  # the same number of cases for every format

    @settings(max_examples=-(-cases // size), deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(bodies, min_size=size, max_size=size))
    def batch(items: list[Any]) -> None:
        state.run(fmt, items)

    started = time.monotonic()
    try:
        batch()
    finally:
        state.tallies.setdefault(fmt, Tally()).seconds += time.monotonic() - started
    assert_format_sentinel_next(state, fmt)
    assert state.tallies[fmt].cases >= cases, state.tallies[fmt]


@dataclass
class RawCase:
    data: bytes
    hold: bool  # keep our side open (the server's timeouts must close it), else shut it after sending
    sock: socket.socket | None = None
    received: bytes = b""
    closed_after: float | None = None
    unsent: bytes = b""


def run_raw_cases(port: int, cases: list[RawCase], within: float) -> None:
    """Send every case on its own connection, all at once; read until each is closed or ``within`` passes."""
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    for case in cases:
        case.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        case.sock.setblocking(False)
        case.unsent = case.data
        sel.register(case.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, case)
    open_count = len(cases)
    try:
        while open_count:
            remaining = started + within - time.monotonic()
            if remaining <= 0:
                break
            for selkey, events in sel.select(min(remaining, 0.5)):
                case = selkey.data
                sock = case.sock
                if events & selectors.EVENT_WRITE:
                    try:
                        sent = sock.send(case.unsent) if case.unsent else 0
                        case.unsent = case.unsent[sent:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        case.unsent = b""  # the server closed on us: fine, read what it said
                    if not case.unsent:
                        sel.modify(sock, selectors.EVENT_READ, case)
                        if not case.hold:
                            try:
                                sock.shutdown(socket.SHUT_WR)
                            except OSError:
                                pass
                if events & selectors.EVENT_READ:
                    data = read_some(sock, 65536)
                    if data is None:
                        continue
                    if data:
                        case.received += data
                    else:
                        case.closed_after = time.monotonic() - started
                        sel.unregister(sock)
                        open_count -= 1
    finally:
        sel.close()
        for case in cases:
            if case.sock is not None:
                case.sock.close()


def raw_fuzz(fuzz: Fuzz, name: str, examples: int, hold: bool) -> None:
    """``examples`` batches of 40 hypothesis-built raw requests, each batch sent on 40 connections at once."""
    tally = fuzz.tallies.setdefault(name, Tally())
    delivered = [0]
    slowest = [0.0]

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(RAW_CASES, min_size=40, max_size=40))
    def batch(items: list[bytes]) -> None:
        cases = [RawCase(data, hold) for data in items]
        run_raw_cases(fuzz.port, cases, RAW_BOUND_S + 2)
        for case in cases:
            assert case.closed_after is not None, \
                f"the connection was still open after {RAW_BOUND_S + 2:.1f} s: {case.data[:300]!r}"
            assert case.closed_after <= RAW_BOUND_S, \
                f"closed only after {case.closed_after:.1f} s (> {RAW_BOUND_S} s): {case.data[:300]!r}"
            slowest[0] = max(slowest[0], case.closed_after)
            accepted = check_raw_answers(case.data, case.received, tally.statuses)
            delivered[0] += accepted
            tally.records += accepted
            tally.cases += 1
        assert fuzz.host.alive(), fuzz.host.log_tail()

    started = time.monotonic()
    channel = fuzz.channels["raw"]
    try:
        batch()
    except BaseException:
        channel.drain()  # what the 200s of the failing run delivered is not for the next test
        raise
    finally:
        tally.seconds += time.monotonic() - started
    channel.take(delivered[0], timeout=20)  # every record a 200 accepted arrived (each checked by Go's rules)
    assert not channel.invalid and not channel.dropped
    # the server still serves, and nothing else came
    assert_sentinel_next_on_channels(sender(fuzz.port, "/f/raw"), channel, body=b'{"sentinel": "after-raw"}',
                                     record={"sentinel": "after-raw"}, timeout=10)
    for fmt, other in fuzz.channels.items():
        assert fmt == "raw" or other.records.empty(), f"raw requests delivered to {fmt}"
    print(f"\n{name}: {tally.cases} connections, {delivered[0]} records accepted and delivered, "
          f"slowest close {slowest[0]:.2f} s")
