"""Hypothesis strategies for the fuzzers: bodies per format (aimed at the odd corners of each format's grammar, of
float64, of UTF-8, and at the plugin's limits in :mod:`tests.fuzz.server`), and raw HTTP/1.x request bytes.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.server import MAX_BODY, MAX_RECORDS, ORJSON_MAX_DUMP_DEPTH, ZSTD, Body

# -- generators ------------------------------------------------------------------------------------------------------

def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a branch with probability proportional to its weight (``st.one_of`` picks uniformly)."""
    total = sum(weight for weight, _ in choices)

    def pick(ticket: int) -> st.SearchStrategy[Any]:
        for weight, strategy in choices:
            if ticket < weight:
                return strategy
            ticket -= weight
        raise AssertionError("unreachable")

    return st.integers(0, total - 1).flatmap(pick)


def too_large(fill: bytes) -> st.SearchStrategy[bytes]:
    """A body just over httpServerMaxBodySize (413 from its Content-Length, then the connection is closed)."""
    return st.integers(MAX_BODY + 1, MAX_BODY + 4096).map(lambda n: (fill * n)[:n])


def encode_text(text: str, how: str) -> bytes:
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if how == "bom2":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if how in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"):
        return text.encode(how, "surrogatepass")
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become CESU bytes: invalid UTF-8


ENCODINGS = st.sampled_from(["utf-8"] * 12 + ["bom", "bom2", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                                "utf-32-le", "latin-1"])


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> bytes:
    """A text in some encoding, sometimes cut short, with a byte inserted or garbage appended."""
    data = encode_text(draw(texts), draw(ENCODINGS))
    how = draw(st.integers(0, 9))
    if how == 0 and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == 1:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at:]
    elif how == 2:
        data += draw(st.sampled_from([b",", b"]", b"}", b" x", b"\x00", b"\xff", b"\n\n", b" \t\r\n", b"\xc2\xa0"]))
    return data


# JSON: values with tokens in the odd corners of the grammar and of float64, keys with escapes, deep nesting.

class Raw(str):
    """JSON text inserted as is."""


JSON_NUMBERS = ["0", "-0", "-0.0", "0e0", "1E+2", "1e-400", "4.9e-324", "2.2250738585072014e-308",
                "1.7976931348623157e308", "1.7976931348623159e308", "1e400", "-1e400", "1e309", "9007199254740993",
                "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
                "1" + "0" * 30, "-" + "9" * 25, "1" + "0" * 309, "1" + "0" * 308, "0." + "0" * 400 + "1",
                "123456789012345678901234567890e-10", "01", ".5", "1.", "+1", "0x10", "1e", "--1", "1_000", "NaN",
                "Infinity", "-Infinity", "nan", "true", "null", "tru", "nul"]
JSON_STRINGS = ['"\\ud800"', '"\\udfff"', '"\\ud83d\\ude00"', '"\\ude00\\ud83d"', '"a\\ud800b"', '"\\ud800\\u0041"',
                '"\\uD83D\\uDE00"', '"\\u0000"', '"\\u00e9"', '"\\uFEFF"', '"\\u12"', '"\\x41"', '"\\/"', '"\\q"',
                '"\x01"', '"\x1f"', '"\x7f"', '"\t"', '"é"', '"\u2028\u2029"', '"\ufeff"', '"😀"', '"\\"',
                '"' + "x" * 300 + '"', "'single'"]
JSON_KEYS = st.one_of(st.text(max_size=6), st.sampled_from(JSON_STRINGS).map(Raw))
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.sampled_from(JSON_NUMBERS + JSON_STRINGS).map(Raw),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=4),
    max_leaves=12,
)


def to_json(value: Any, spaced: bool) -> str:
    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + comma.join(to_json(k if isinstance(k, Raw) else Raw(json.dumps(k, ensure_ascii=spaced)), spaced)
                                + colon + to_json(v, spaced) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + comma.join(to_json(v, spaced) for v in value) + "]"
    return json.dumps(value, ensure_ascii=spaced)


@st.composite
def json_documents(draw: st.DrawFn) -> str:
    spaced = draw(st.booleans())
    shape = draw(st.integers(0, 5))
    if shape <= 2:  # one object
        return to_json(draw(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=5)), spaced)
    if shape <= 4:  # an array of (mostly) objects
        items = draw(st.lists(st.one_of(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=3), JSON_VALUES),
                              max_size=6))
        return to_json(items, spaced)
    return to_json(draw(JSON_VALUES), spaced)  # anything


def many_records(n: int) -> bytes:
    return ("[" + ",".join(f'{{"i":{i}}}' for i in range(n)) + "]").encode()


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """Nesting around orjson's serialisation limit, the 1024 parse limit, and far past it."""
    depth = draw(st.one_of(st.integers(1, 1100), st.sampled_from([ORJSON_MAX_DUMP_DEPTH - 2 + i for i in range(4)]
                                                                 + [1022, 1023, 1024, 1025, 1026, 2000, 5000])))
    kind = draw(st.sampled_from(["arrays-in-record", "objects", "arrays", "mixed", "unclosed"]))
    if kind == "arrays-in-record":  # {"a": [[...]]}: depth+1 in all
        return b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "mixed":
        return b'[{"a":' * depth + b"{}" + b"}]" * depth
    return b"[" * depth


CLEAN_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 2.0**53 + 1, 1e22, 1e-7]),
    st.text(max_size=8),
)
CLEAN_VALUES = st.recursive(
    CLEAN_LEAVES, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                                     max_size=3), max_leaves=10)
CLEAN_JSON = st.tuples(
    st.one_of(st.dictionaries(st.text(max_size=5), CLEAN_VALUES, max_size=4),
              st.lists(st.dictionaries(st.text(max_size=5), CLEAN_VALUES, max_size=3), max_size=5)),
    st.booleans(),
).map(lambda doc_ascii: json.dumps(doc_ascii[0], ensure_ascii=doc_ascii[1]).encode())

JSON_BODIES = weighted(
    (20, CLEAN_JSON),
    (30, mutated(json_documents())),
    (25, json_documents().map(lambda text: text.encode("utf-8", "surrogatepass"))),
    (10, st.binary(max_size=200)),
    (8, deep_json()),
    (4, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 5).map(many_records)),
    (1, too_large(b" ")),
)

# delimited: line endings of every kind, the delimiter, invalid UTF-8, many lines.
DELIMITED_PIECES = st.one_of(
    st.sampled_from(["a", "b", "1", ",", ",,", "\r", "\n", "\r\n", "\n\r", "\r\r\n", "\x0c", "\x0b", "\x1c", "\x85",
                     "\u2028", "é", "\x00", " ", "\t", ";", '"', "\ufeff", "\ud800"]),
    st.text(max_size=4),
)
DELIMITED_BODIES = weighted(
    (40, mutated(st.lists(DELIMITED_PIECES, max_size=30).map("".join))),
    (10, st.binary(max_size=200)),
    (4, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 3).map(
        lambda n: "\r\n".join(f"{i},x,y,z" for i in range(n)).encode())),
    (1, too_large(b"a,b\n")),
)

# urlencoded: bad and good escapes, escapes to invalid UTF-8, ';', repeated keys.
URLENCODED_PIECES = st.one_of(
    st.sampled_from(["a", "b", "=", "&", "&&", ";", "%", "%2", "%zz", "%g1", "%41", "%C3%A9", "%c3", "%ff", "%ED%A0%80",
                     "%F0%9F%98%80", "%f0%9f", "+", "%2B", "%26", "%3D", "é", "\x00", "%00", "%%", "%e2%82", " ",
                     "%0", "\ud800", "%EF%BB%BF"]),
    st.text(max_size=3),
)
URLENCODED_BODIES = weighted(
    (40, mutated(st.lists(URLENCODED_PIECES, max_size=20).map("".join))),
    (10, st.binary(max_size=200)),
    (1, too_large(b"a=1&")),
)

BINARY_BODIES = weighted(
    (40, st.binary(max_size=2000)),
    (5, st.just(b"")),
    (1, too_large(b"\x00\xff")),
)


# protobuf: messages built at the wire level, valid and not.

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, data: bytes) -> bytes:
    return key(number, 2) + varint(len(data)) + data


def zigzag32(n: int) -> int:
    return (n << 1) ^ (n >> 31)


PB_TEXT = st.one_of(st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=6))


def pb_fields(child: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    import struct

    return st.one_of(
        PB_TEXT.map(lambda b: ld(1, b)),
        st.floats().map(lambda x: key(2, 1) + struct.pack("<d", x)),
        st.floats(width=32).map(lambda x: key(3, 5) + struct.pack("<f", x)),
        st.integers(0, 2**64 - 1).map(lambda n: key(4, 0) + varint(n)),
        st.integers(0, 2**64 - 1).map(lambda n: key(5, 0) + varint(n)),
        st.integers(-(2**31), 2**31 - 1).map(lambda n: key(6, 0) + varint(zigzag32(n) & 0xFFFFFFFF)),
        st.integers(0, 3).map(lambda n: key(7, 0) + varint(n)),
        st.binary(max_size=8).map(lambda b: ld(8, b)),
        st.lists(st.integers(0, 2**64 - 1), max_size=4).map(lambda v: ld(9, b"".join(map(varint, v)))),
        st.integers(0, 2**32 - 1).map(lambda n: key(9, 0) + varint(n)),
        child.map(lambda b: ld(10, b)),
        st.integers(0, 9).map(lambda n: key(11, 0) + varint(n)),
        st.tuples(PB_TEXT, PB_TEXT).map(lambda kv: ld(12, ld(1, kv[0]) + ld(2, kv[1]))),
        PB_TEXT.map(lambda b: ld(13, b)),
        st.integers(0, 2**32 - 1).map(lambda n: key(14, 0) + varint(n)),
        st.lists(st.floats(), max_size=3).map(lambda v: ld(15, b"".join(struct.pack("<d", x) for x in v))),
        st.integers(0, 2**64 - 1).map(lambda n: key(16, 1) + n.to_bytes(8, "little")),
        st.tuples(st.integers(0, 2**29 - 1), st.integers(0, 7), st.binary(max_size=9)).map(
            lambda t: key(t[0], t[1]) + t[2]),  # any field number and wire type, even 0, 6, 7 and groups
        st.binary(min_size=1, max_size=4),  # raw garbage
    )


PB_MESSAGES = st.recursive(st.just(b""), lambda children: st.lists(pb_fields(children), max_size=5).map(b"".join),
                           max_leaves=6)


@st.composite
def pb_deep(draw: st.DrawFn) -> bytes:
    """Messages nested through ``child`` around the protobuf recursion limit (100)."""
    data = b""
    for _ in range(draw(st.integers(90, 130))):
        data = ld(10, data)
    return data


@st.composite
def pb_cut(draw: st.DrawFn) -> bytes:
    data = draw(PB_MESSAGES)
    return data[:draw(st.integers(0, len(data)))] if data else data


PROTOBUF_BODIES = weighted(
    (30, PB_MESSAGES),
    (10, pb_cut()),
    (10, st.binary(max_size=100)),
    (3, pb_deep()),
    (1, too_large(b"\x0a\x00")),
)

# custom (kv): numbers Python reads in odd ways, Unicode whitespace and line breaks, missing keys.
KV_VALUES = st.one_of(
    st.sampled_from(["1", "-1", "1.5", "nan", "inf", "-inf", "1e400", "1_000", "٣", "0x10", "99999999999999999999",
                     "-99999999999999999999", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
                     "-9223372036854775809", "1" * 5000, "True", "", "=", "é", "\ud800", "1e-400"]),
    st.text(max_size=4),
)
KV_PAIRS = st.tuples(st.sampled_from(["a", "temp", "x_y", "é", "", "k=", "=", "\x00"]) | st.text(max_size=3),
                     st.sampled_from(["=", "", "=="]), KV_VALUES).map("".join)
KV_LINES = st.lists(KV_PAIRS, max_size=4).flatmap(
    lambda pairs: st.sampled_from([" ", "\t", "  ", "\x0b", "\x1c", "\u3000", "\xa0"]).map(lambda sep: sep.join(pairs)))
KV_TEXT = st.lists(KV_LINES, max_size=5).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r", "\x85", "\u2028", "\n\n"]).map(lambda sep: sep.join(lines)))
CUSTOM_BODIES = weighted(
    (40, mutated(KV_TEXT)),
    (8, st.binary(max_size=120)),
    (3, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 3).map(
        lambda n: "\n".join(f"i={i}" for i in range(n)).encode())),
    (1, too_large(b"a=1\n")),
)

# NDJSON: lines of objects (and of everything else), blank lines of every kind, CRLF, a BOM, many lines.
NDJSON_LINES = weighted(
    (10, st.tuples(st.dictionaries(st.text(max_size=5), CLEAN_VALUES, max_size=3), st.booleans()).map(
        lambda t: json.dumps(t[0], ensure_ascii=t[1]).encode())),
    (6, json_documents().map(lambda text: text.encode("utf-8", "surrogatepass"))),
    (3, st.sampled_from([b"", b" ", b"\r", b"\t \r", b"\x0b", b"\x0c", b"\xc2\xa0", b"\xef\xbb\xbf", b"[]", b"{}",
                         b"null", b"{", b"}"])),
    (1, st.binary(max_size=20).map(lambda b: b.replace(b"\n", b""))),
    (1, st.sampled_from([ORJSON_MAX_DUMP_DEPTH - 1, ORJSON_MAX_DUMP_DEPTH, 1023, 1024, 1025]).map(
        lambda d: b'{"a":' + b"[" * d + b"]" * d + b"}")),
)
NDJSON_BODIES = weighted(
    (30, st.tuples(st.lists(NDJSON_LINES, min_size=1, max_size=4), st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
                   st.booleans(), st.booleans()).map(
        lambda t: (b"\xef\xbb\xbf" if t[3] else b"") + t[1].join(t[0]) + (t[1] if t[2] else b""))),
    (5, mutated(st.lists(json_documents(), max_size=4).map("\n".join))),
    (5, st.binary(max_size=100)),
    (3, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 3).map(
        lambda n: b"\n".join(b'{"i":%d}' % i for i in range(n)))),
    (1, too_large(b"{}\n")),
)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    stream = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return stream.compress(data) + stream.flush()


def _zstd(data: bytes) -> bytes:
    return ZSTD.compress(data) if ZSTD is not None else _gzip(data)  # without zstd: 415, whatever the bytes


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": _gzip, "deflate": _zlib, "deflate-raw": _raw_deflate,
                                                    "zstd": _zstd}
#: Content-Encoding values sent, and how the body is compressed for each (None: sent as is).
ENCODING_CHOICES: list[tuple[bytes | None, str | None]] = [
    (b"gzip", "gzip"), (b"gzip", "gzip"), (b"x-gzip", "gzip"), (b"GZip", "gzip"), (b"deflate", "deflate"),
    (b"deflate", "deflate-raw"), (b"identity", None), (None, None), (b"br", None), (b"zstd", "gzip"),
    (b"zstd", "zstd"), (b"zstd", "zstd"), (b"ZSTD", "zstd"), (b"gzip", "zstd"),
    (b"gzip, gzip", "gzip"), (b"gzip, identity", "gzip"), (b"", None), (b"deflate", "gzip"), (b"gzip", "deflate"),
]


@st.composite
def compressed_bodies(draw: st.DrawFn) -> Body:
    """JSON (mostly valid) compressed as the header says, or not; sometimes cut, flipped, padded or in two gzip
    members; now and then a small body that inflates past httpServerMaxBodySize."""
    data = draw(weighted(
        (12, CLEAN_JSON), (4, json_documents().map(lambda text: text.encode("utf-8", "surrogatepass"))),
        (2, st.binary(max_size=60)),
        (1, st.integers(MAX_BODY - 10, MAX_BODY + 10).map(lambda n: b'{"a":"' + b"x" * (n - 8) + b'"}')),
        (1, st.just(b"[" + b" " * 1_000_000 + b"]")),
    ))
    header, how = draw(st.sampled_from(ENCODING_CHOICES))
    if how is None:
        return Body(data, header)
    if how in ("gzip", "zstd") and len(data) > 1 and draw(st.booleans()):  # two members (frames) back to back
        cut = draw(st.integers(1, len(data) - 1))
        wire = COMPRESSORS[how](data[:cut]) + COMPRESSORS[how](data[cut:])
    else:
        wire = COMPRESSORS[how](data)
    damage = draw(st.integers(0, 9))
    if damage == 0:
        wire = wire[:draw(st.integers(0, len(wire)))]
    elif damage == 1 and wire:
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([wire[at] ^ draw(st.integers(1, 255))]) + wire[at + 1:]
    elif damage == 2:
        wire += draw(st.sampled_from([b"\x00", b"\x00" * 8, b"garbage", _gzip(b""), _zstd(b""), b"\x28\xb5"]))
    return Body(wire, header)


STRATEGIES = {"json": JSON_BODIES, "delimited": DELIMITED_BODIES, "urlencoded": URLENCODED_BODIES,
              "binary": BINARY_BODIES, "protobuf": PROTOBUF_BODIES, "custom": CUSTOM_BODIES, "ndjson": NDJSON_BODIES,
              "compressed": compressed_bodies()}


# -- raw HTTP ------------------------------------------------------------------------------------------------------

RAW_METHODS = [b"POST", b"POST", b"POST", b"PUT", b"GET", b"OPTIONS", b"DELETE", b"PATCH", b"CONNECT", b"TRACE",
               b"PRI", b"post", b"P0ST", b"", b"POST POST", b"\x00", b"M-SEARCH", b"PROPFIND", b"SOURCE"]
RAW_TARGETS = [b"/f/raw", b"/f/raw", b"/f/raw?x=1&y", b"/f/raw#frag", b"/f/raw/", b"/f//raw", b"//f/raw", b"/f/./raw",
               b"/f/../f/raw", b"/f%2Fraw", b"/f/r%61w", b"/f/r%61", b"/%zz", b"/%ff", b"/\xff", b"/\xc3\xa9", b"*",
               b"http://127.0.0.1/f/raw", b"https://x/f/raw?y", b"http://[::1", b"f/raw", b"", b"/f/raw\x00",
               b"/f raw", b"/f/raw\t", b"/" + b"a" * 17000, b"/nope", b"/f/json/../raw"]
RAW_VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/1",
                b"", b"http/1.1", b"HTTP/1.1 x", b"HTTP/11", b"HTTP/9.9", b"HTTPS/1.1", b"HTTP/1.1\x00"]
RAW_LENGTHS = [b"-1", b"abc", b" 5", b"5 ", b"+5", b"0x5", b"99999999999999999999", b"5, 5", b"5,6", b"", b"0",
               str(MAX_BODY + 1).encode(), b"1e3"]
RAW_HEADERS = st.one_of(
    st.just(b"Host: 127.0.0.1"),
    st.sampled_from(RAW_LENGTHS).map(lambda v: b"Content-Length: " + v),
    st.integers(0, 200).map(lambda n: b"Content-Length: %d" % n),
    st.sampled_from([b"chunked", b"gzip", b"chunked, gzip", b"gzip, chunked", b"identity", b"Chunked", b"chunked ",
                     b"chunked, chunked", b"xchunked", b""]).map(lambda v: b"Transfer-Encoding: " + v),
    st.sampled_from([b"100-continue", b"100-Continue", b"200-ok", b""]).map(lambda v: b"Expect: " + v),
    st.sampled_from([b"close", b"keep-alive", b"upgrade", b"close, upgrade", b"Keep-Alive, x"]).map(
        lambda v: b"Connection: " + v),
    st.sampled_from([b"websocket", b"h2c", b""]).map(lambda v: b"Upgrade: " + v),
    st.sampled_from([b"gzip", b"x-gzip", b"deflate", b"identity", b"br", b"gzip, gzip", b"", b"\xff"]).map(
        lambda v: b"Content-Encoding: " + v),
    st.sampled_from([b"application/json", b"text/plain; charset=\xe9", b"\x01", b"a" * 300]).map(
        lambda v: b"Content-Type: " + v),
    st.sampled_from([b" folded continuation", b"\tfolded", b"NoColon", b" Leading: space", b"Name : x",
                     b"Bad\x00Name: x", b"X: \x00", b"X: \x7f", b"X: \xff\xfe", b"X-Empty:", b": novalue",
                     b"X-Long: " + b"v" * 17000, b"Authorization: Basic !!!", b"Host: a", b"Host: b"]),
    st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=12)).map(lambda kv: kv[0] + b": " + kv[1]),
)
CHUNK_SIZES = st.one_of(st.none(), st.sampled_from([b"ZZ", b"-1", b"FFFFFFFFFFFFFFFFFF", b"0x5", b" 5", b"5 ", b"",
                                                    b"1;", b"0"]))


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    out = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)):
        size = draw(CHUNK_SIZES)
        ext = draw(st.sampled_from([b"", b"", b";a=b", b";", b';a="q"', b";" + b"e" * 100]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
        out += (b"%X" % len(data) if size is None else size) + ext + b"\r\n" + data + end
    last = draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n\r\n", b"0\r\nX-Trailer: t\r\n\r\n", b"0\r\n", b"", b"0\n\n",
                                 b"00\r\n\r\n"]))
    return out + last


RAW_BODIES = st.one_of(st.just(b'{"raw": 1}'), st.just(b'[{"raw": 1}, {"raw": 2}]'), st.just(b"{bad"),
                       st.binary(max_size=40), st.just(gzip.compress(b'{"raw": 3}', mtime=0)),
                       st.just(zlib.compress(b'[{"raw": 4}]')))


@st.composite
def raw_request(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\n\r"]))
    line = b" ".join([draw(st.sampled_from(RAW_METHODS)), draw(st.sampled_from(RAW_TARGETS)),
                      draw(st.sampled_from(RAW_VERSIONS))])
    headers = draw(st.lists(RAW_HEADERS, max_size=5))
    body = draw(RAW_BODIES)
    framing = draw(st.sampled_from(["length", "length", "chunked", "none", "wrong-length", "over-limit"]))
    if framing == "over-limit":
        headers.append(b"Content-Length: %d" % (MAX_BODY + 1))
    elif framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "wrong-length":
        headers.append(b"Content-Length: %d" % max(0, len(body) + draw(st.integers(-5, 5))))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body())
    return line + eol + b"".join(h + eol for h in draw(st.permutations(headers))) + eol + body


RAW_CASES = st.one_of(
    st.lists(raw_request(), min_size=1, max_size=3).map(b"".join),
    st.tuples(raw_request(), st.floats(0, 1)).map(lambda t: t[0][:int(len(t[0]) * t[1])]),  # cut anywhere
    st.binary(max_size=300),
    st.tuples(raw_request(), st.binary(max_size=40)).map(b"".join),
)
