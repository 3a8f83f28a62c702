"""What each costly body of issue 14 costs the decoders alone (no HTTP): decode + frame in a worker thread, as the
plugin does for a large body, while the main thread (standing in for the event loop) wakes every millisecond.

For each body, in a fresh process: CPU seconds of decode + frame, the longest the main thread was kept from running
(the longest stretch the worker held the GIL: one C call such as ``orjson.loads``), and the growth of the peak
resident set over the body itself. Run from the repository root::

    .venv/bin/python bench/cost.py            # every body
    .venv/bin/python bench/cost.py ndjson-newlines json-empty-objects
    .venv/bin/python bench/cost.py --calls    # the longest single C calls left, timed alone

Run it on two commits to compare (it works with the decoders from before ``Limits`` too: then they get the record
limit alone). The figures are machine-dependent: compare rows of one run, not with another machine's.
"""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 2**20
_SIZE = 10 * MIB


def _array(element: bytes) -> bytes:
    return b"[" + b",".join([element] * ((_SIZE - 1) // (len(element) + 1))) + b"]"


#: name → (format, content type, body maker)
BODIES: dict[str, tuple[str, str, Callable[[], bytes]]] = {
    "ndjson-newlines": ("json", "application/x-ndjson", lambda: b"\n" * _SIZE),
    "ndjson-whitespace": ("json", "application/x-ndjson", lambda: b" \t\r\n" * (_SIZE // 4)),
    "ndjson-100k-records": ("json", "application/x-ndjson",
                            lambda: b"".join(b'{"i":%d,"pad":"%s"}\n' % (i, b"x" * 80) for i in range(100_000))),
    "delimited-commas": ("delimited", "", lambda: b"," * _SIZE),
    "json-empty-objects": ("json", "application/json", lambda: _array(b"{}")),
    "json-50-byte-objects": ("json", "application/json", lambda: _array(b'{"a":"' + b"x" * 40 + b'"}')),
    "json-90k-records": ("json", "application/json", lambda: json.dumps(
        [{"i": i, "pad": "x" * 83} for i in range(90_000)], separators=(",", ":")).encode()),
    "json-10-deep-arrays": ("json", "application/json", lambda: b'{"a":[' + b",".join(
        [b"[[[[[[[[[[1]]]]]]]]]]"] * ((_SIZE - 8) // 23)) + b"]}"),
    "json-1m-strings": ("json", "application/json",
                        lambda: b'{"a":[' + b",".join([b'"sssss"'] * 1_000_000) + b"]}"),
    "json-400k-nested-objects": ("json", "application/json", lambda: b'{"a":{' + b",".join(
        b'"k%d":{"v":%d}' % (i, i) for i in range(400_000)) + b"}}"),
    "urlencoded-keys": ("urlencoded", "", lambda: b"&".join(b"%d" % i for i in range(1_400_000))[:_SIZE]),
    "gzip-members": ("gzip", "", lambda: gzip.compress(b"") * (10_000_000 // 20)),
}


def _decoder(fmt: str):  # type: ignore[no-untyped-def]
    from httppush_plugin.decoders import DelimitedDecoder, JsonDecoder, UrlencodedDecoder

    return {"json": JsonDecoder, "delimited": DelimitedDecoder, "urlencoded": UrlencodedDecoder}[fmt]()


def _limits():  # type: ignore[no-untyped-def]
    try:
        from httppush_plugin.decoders import Limits
    except ImportError:
        return 100_000  # before Limits: the record limit alone
    return Limits()


def _work(fmt: str, content_type: str, body: bytes) -> str:
    import gc

    if fmt == "gzip":
        from httppush_plugin.encoding import Inflater

        inflater, held = Inflater("gzip", _SIZE), 0
        for start in range(0, len(body), 65536):  # as the socket hands it over
            held += len(inflater.feed(body[start:start + 65536], held))
        inflater.finish()
        return f"{held} bytes"
    from httppush_plugin.framing import frame_records

    gc.disable()  # as offload.Offload.decode does (before it did not: compare with ``--gc``)
    if "--gc" in sys.argv:
        gc.enable()
    records = _decoder(fmt).decode_request(body, content_type, _limits())
    frames = frame_records(records, None)
    return f"{len(records)} records, {len(frames.data) / MIB:.1f} MiB of frames"


def run_one(name: str) -> dict[str, object]:
    fmt, content_type, make = BODIES[name]
    body = make()
    import httppush_plugin.encoding
    import httppush_plugin.framing  # noqa: F401 (imported before the clock starts)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcome: dict[str, object] = {}

    def worker() -> None:
        started = time.thread_time()
        try:
            outcome["result"] = _work(fmt, content_type, body)
        except Exception as exc:  # a refusal is a result here
            outcome["result"] = f"{getattr(exc, 'status', type(exc).__name__)} {str(exc)[:90]}"
        outcome["cpu"] = time.thread_time() - started

    thread = threading.Thread(target=worker)
    longest, last = 0.0, time.perf_counter()
    started = last
    thread.start()
    while thread.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    thread.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"body": name, "MiB": round(len(body) / MIB, 2), "wall_s": round(time.perf_counter() - started, 3),
            "cpu_s": round(float(outcome["cpu"]), 3), "longest_gil_ms": round(longest * 1000, 1),
            "peak_growth_mb": round(peak - base), "result": outcome["result"]}


def biggest_calls() -> None:
    """The longest single C calls the decoders now make (each holds the GIL throughout), timed alone: best of 5."""
    import orjson

    from httppush_plugin.decoders.base import COUNT_STEP, nonblank_lines

    record_values = 250_000  # httpServerMaxRecordValues' default
    worst_record = {  # one record at the limit, of the kinds that parse slowest per value
        "250k nested objects": b'{"a":{' + b",".join(b'"k%d":{"v":%d}' % (i, i) for i in range(record_values // 4))
                               + b"}}",
        "250k short strings": b'{"a":[' + b",".join([b'"sssss"'] * (record_values - 3)) + b"]}",
    }
    dense_slice = b"[" + b",".join([b"{}"] * (128 * 1024 // 3)) + b"]"
    strings_record = orjson.loads(worst_record["250k short strings"])
    calls: list[tuple[str, Callable[[], object]]] = [
        *((f"orjson.loads, one record of {name} ({len(body) / MIB:.1f} MiB)", lambda body=body: orjson.loads(body))
          for name, body in worst_record.items()),
        ("orjson.loads, a 128 KiB slice of {} (the densest)", lambda: orjson.loads(dense_slice)),
        ("orjson.dumps, the 250k-strings record (framing it)", lambda: orjson.dumps(strings_record)),
        (f"bytes.count over one step ({COUNT_STEP // MIB} MiB)", lambda: (b"," * COUNT_STEP).count(b",")),
        ("split + strip + filter of 100,000 one-byte lines (the most httpServerMaxRecords lets through; 3 C calls)",
         lambda: nonblank_lines(b"a\n" * 100_000)),
        ("orjson.loads of a whole 10 MiB array of {} (what the decoder no longer does)",
         lambda: orjson.loads(_array(b"{}"))),
    ]
    import gc

    gc.disable()
    for name, call in calls:
        best = min(_timed(call) for _ in range(5))
        print(f"{best * 1000:8.1f} ms  {name}")


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    if "--calls" in sys.argv:
        biggest_calls()
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(run_one(sys.argv[2])))
        return
    names = [arg for arg in sys.argv[1:] if not arg.startswith("--")] or list(BODIES)
    flags = [arg for arg in sys.argv[1:] if arg.startswith("--")]
    print(f"{'body':22} {'MiB':>5} {'wall s':>7} {'cpu s':>6} {'GIL ms':>7} {'peak +MB':>8}  result")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--one", name, *flags], capture_output=True, text=True,
                             check=True).stdout
        row = json.loads(out)
        print(f"{row['body']:22} {row['MiB']:5} {row['wall_s']:7} {row['cpu_s']:6} {row['longest_gil_ms']:7} "
              f"{row['peak_growth_mb']:8}  {row['result']}")


if __name__ == "__main__":
    main()
