"""Example custom decoder for httppush: ``key=value`` pairs, one record per line.

Body ``"temperature=21.5 humidity=40\\nstatus=ok"`` → ``[{"temperature": 21.5, "humidity": 40}, {"status": "ok"}]``.
Pairs are separated by spaces; values that read as numbers become numbers (integers within 64 bits, finite floats;
anything else stays text). Use it with a config group whose
``decoder`` is ``"kv:decode"`` (the shipped ``kv`` group), or on eKuiper 1.x with FORMAT="custom", SCHEMAID="kv.decode".

A decoder is a function ``bytes -> dict | list[dict]``; raising ``ValueError`` rejects the body with HTTP 400 and
the error's message.
"""

from __future__ import annotations

import math


def _value(text: str) -> int | float | str:
    """A number when ``text`` reads as one that JSON can carry; otherwise the text itself, unchanged (so
    ``18446744073709551616``, ``nan`` and ``1e400`` stay strings rather than break the plugin's framing)."""
    try:
        whole = int(text)
    except ValueError:
        pass
    else:
        return whole if -(2**63) <= whole < 2**64 else text
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def decode(body: bytes) -> list[dict]:
    records = []
    for number, line in enumerate(body.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = {}
        for pair in line.split():
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"line {number}: {pair!r} is not key=value")
            record[key] = _value(value)
        records.append(record)
    return records
