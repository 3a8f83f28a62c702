"""Records as host frames, in-process: the SP-over-IPC layout eKuiper reads, the envelope, and what cannot be framed."""

from __future__ import annotations

import json

import pytest

from httppush_plugin.decoders import CustomDecoderFault, DecodeError
from httppush_plugin.framing import frame_records


def unframe(data: bytes) -> list[dict[str, object]]:
    """``01 <length:u64 BE> <JSON>`` messages, as eKuiper's mangos PULL socket reads them."""
    out, at = [], 0
    while at < len(data):
        assert data[at] == 1, f"frame tag at {at} is {data[at]}"
        size = int.from_bytes(data[at + 1:at + 9], "big")
        out.append(json.loads(data[at + 9:at + 9 + size]))
        at += 9 + size
    return out


@pytest.mark.parametrize("records", [[{"t": 1}], [{"t": 1}, {"u": "ü"}, {}], [{"nested": {"a": [1, 2.5, None]}}]])
def test_framing_layout_and_envelope(records: list[dict[str, object]]) -> None:
    frames = frame_records(records, None)
    assert unframe(frames.data) == [{"message": record} for record in records]
    assert len(frames) == len(records) and frames.ends[-1] == len(frames.data)
    with_meta = frame_records(records, b'{"path":"/a"}')
    assert unframe(with_meta.data) == [{"message": record, "meta": {"path": "/a"}} for record in records]


def test_framing_count_within_counts_whole_frames() -> None:
    frames = frame_records([{"a": 1}, {"a": 2}, {"a": 3}], None)
    first, second, _ = frames.ends
    assert [frames.count_within(n) for n in (0, first - 1, first, second + 3, len(frames.data))] == [0, 0, 1, 2, 3]


@pytest.mark.parametrize("records", [[{"set": {1, 2}}], [{"ok": 1}, {"big": 2 ** 70}]])
def test_framing_unrepresentable_record_named(records: list[dict[str, object]]) -> None:
    index = len(records) - 1
    with pytest.raises(DecodeError, match=f"record {index} cannot be passed to eKuiper"):
        frame_records(records, None)
    with pytest.raises(CustomDecoderFault, match=f"the decoder's record {index}"):
        frame_records(records, None, custom=True)
