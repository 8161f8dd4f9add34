"""Inputs a hostile or careless tenant could hand a parser: JSON text built token by token (so
that it can hold what ``json.dumps`` never writes: duplicate keys, NaN, integers past 4,300
digits, lone surrogates raw or escaped, nesting thousands of levels deep), valid documents with
such a value put in, and raw or mutated bytes.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

#: Depths around every limit: the project's 32, Python's recursion limit, the API server's 10,000.
DEPTHS = (31, 32, 33, 34, 999, 1_000, 1_001, 5_000, 10_001, 100_000)

# Every code point, lone surrogates included (hypothesis leaves them out by default).
ANY_CHARACTER = st.characters(exclude_categories=())
NASTY_CHARACTERS = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\ufeff", "\u2028", '"', "\\", "\n", "\x7f", "\U0010ffff", "é"])
TEXT = st.text(st.one_of(ANY_CHARACTER, NASTY_CHARACTERS), max_size=40)
def _repeat(spec: tuple[str, int]) -> str:
    return spec[0] * spec[1]


#: Keys a tenant might write: valid names, collisions (duplicates), odd and very long ones.
KEYS = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    st.sampled_from(["A", "A", "name", "key", "value", "scope", "format", "params", "secrets"]),
    TEXT,
    st.sampled_from([("K", 129), ("K", 65_536), ("\ud800", 3), ("é", 40_000)]).map(_repeat),
    st.just("a\x00b"),
)

_SPECIAL_NUMBERS = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-0", "0.0", "1E-400", "0e0",
]) | st.sampled_from([  # (before, digit, count, after): built when drawn, for a short repr
    ("", "9", 4_300, ""), ("-", "9", 4_300, ""), ("", "9", 4_301, ""), ("-", "1", 5_000, ""),
    ("1", "0", 20_000, ".5"), ("1e", "9", 5_000, ""),
]).map(lambda spec: spec[0] + spec[1] * spec[2] + spec[3])
_SPECIAL_STRINGS = st.sampled_from([
    '"\\ud800"', '"\\udfff\\ud800"', '"a\\udc00b"', '"\\u0000"', '""', '"\\/"', '"\\uD834\\uDD1E"',
])


def _string_token(text: str, ascii_only: bool) -> str:
    # ensure_ascii=False keeps a lone surrogate raw: the document's bytes then are not UTF-8.
    return json.dumps(text, ensure_ascii=ascii_only)


SCALAR_TOKENS = st.one_of(
    st.sampled_from(["null", "true", "false"]),
    st.integers().map(str),
    st.floats().map(json.dumps),  # NaN, Infinity and -Infinity included
    _SPECIAL_NUMBERS,
    _SPECIAL_STRINGS,
    st.builds(_string_token, TEXT, st.booleans()),
)
KEY_TOKENS = st.builds(_string_token, KEYS, st.booleans())


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"


def _deep(levels: int, kind: str, inner: str) -> str:
    if kind == "array":
        return "[" * levels + inner + "]" * levels
    return '{"k":' * levels + inner + "}" * levels


def deep_tokens(inner: st.SearchStrategy[str],
                depths: tuple[int, ...] = DEPTHS) -> st.SearchStrategy[str]:
    """``inner`` nested to one of ``depths`` in arrays or objects."""
    return st.builds(_deep, st.sampled_from(depths), st.sampled_from(["array", "object"]), inner)


def value_tokens(depths: tuple[int, ...] = DEPTHS) -> st.SearchStrategy[str]:
    """Any JSON value as text, possibly not JSON at all in the ways listed above."""
    return st.recursive(
        SCALAR_TOKENS,
        lambda children: st.one_of(
            st.lists(children, max_size=5).map(_array),
            st.lists(st.tuples(KEY_TOKENS, children), max_size=5).map(_object),
            deep_tokens(children, depths),
        ),
        max_leaves=12,
    )


VALUE_TOKENS = value_tokens()


def object_text(fields: st.SearchStrategy[list[tuple[str, str]]]) -> st.SearchStrategy[str]:
    """A JSON object from (key token, value token) pairs."""
    return fields.map(_object)


def encode(text: str) -> bytes:
    """The text's UTF-8 bytes; a lone surrogate becomes the invalid bytes a careless encoder
    writes (``surrogatepass``)."""
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[bytes]) -> bytes:
    """A document with a few bytes flipped, inserted, deleted, cut off or prefixed."""
    raw = bytearray(draw(documents))
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "prefix"]))
        byte = draw(st.sampled_from([0x00, 0x22, 0x5C, 0x5B, 0x7B, 0x7D, 0x80, 0xC0, 0xED, 0xEF,
                                     0xFE, 0xFF, 0x0A, 0x2C, 0x3A])
                    | st.integers(0, 255))
        if action == "insert":
            raw.insert(where, byte)
        elif action == "delete" and where < len(raw):
            del raw[where]
        elif action == "replace" and where < len(raw):
            raw[where] = byte
        elif action == "truncate":
            del raw[where:]
        elif action == "prefix":
            raw[:0] = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b" \n", b"[",
                                            b"{", b"\xed\xa0\x80"]))
    return bytes(raw)


#: Bytes of any kind, short and long.
RAW_BYTES = st.one_of(st.binary(max_size=200), st.binary(min_size=1, max_size=5_000))


def json_nested(levels: int) -> object:
    """A value nested ``levels`` levels deep in arrays (built without recursion)."""
    value: object = "deep"
    for _ in range(levels):
        value = [value]
    return value
