"""Example custom decoder for httppush: ``key=value`` pairs, one record per line.

Body ``"temperature=21.5 humidity=40\\nstatus=ok"`` → ``[{"temperature": 21.5, "humidity": 40}, {"status": "ok"}]``.
Pairs are separated by spaces; values that read as numbers become numbers. Use it with a config group whose
``decoder`` is ``"kv:decode"`` (the shipped ``kv`` group), or on eKuiper 1.x with FORMAT="custom", SCHEMAID="kv.decode".

A decoder is a function ``bytes -> dict | list[dict]``; raising ``ValueError`` rejects the body with HTTP 400 and
the error's message.
"""

from __future__ import annotations


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


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
