"""The masker must hide every resolved value in every likely form, however output is chunked."""

from __future__ import annotations

import base64
import itertools
import json
import random
import time
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fx_ef.masking import (
    MASK,
    MIN_FRAGMENT_LENGTH,
    MIN_MASKED_LENGTH,
    Masker,
    MaskingStream,
    forms_of,
    fragment_sources_of,
)

SECRET = 'p@ss wörd/+?&="x"\\ü~>?~'  # its base64 has "/" and padding: every form differs


def stream_all(stream: MaskingStream, chunks: list[str]) -> str:
    """What a reader of the stream sees in the end."""
    return "".join(stream.write(chunk) for chunk in chunks) + stream.flush()


def split_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


def secret_lines(secret: str) -> list[str]:
    """The lines of a value that the short-value rule says must be masked."""
    lines = [line.rstrip("\r") for line in secret.split("\n")]
    return [line for line in lines if len(line) >= MIN_MASKED_LENGTH]


# --- forms of a value ------------------------------------------------------------------------


def test_constants() -> None:
    assert MASK == "***"
    assert MIN_MASKED_LENGTH == 4
    assert MIN_FRAGMENT_LENGTH == 16


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64 unpadded": lambda s: base64.b64encode(s.encode()).decode().rstrip("="),
    "base64 urlsafe": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "base64 urlsafe unpadded": lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    "quote safe empty": lambda s: quote(s, safe=""),
    "quote": lambda s: quote(s),
    "quote_plus": lambda s: quote_plus(s),
    "json escaped": lambda s: json.dumps(s)[1:-1],
    "json escaped non-ascii": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "python escaped": lambda s: repr(s)[1:-1],
}


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_encoded_form_is_masked(encode: Callable[[str], str]) -> None:
    masker = Masker({"password": SECRET})
    encoded = encode(SECRET)

    assert encoded in forms_of(SECRET)
    assert masker.mask(f"before {encoded} after") == f"before {MASK} after"


def test_encodings_really_differ_from_the_raw_value() -> None:
    """Otherwise the parametrized test above would prove nothing."""
    encoded = {name: encode(SECRET) for name, encode in ENCODINGS.items()}
    assert len(set(encoded.values())) == len(encoded)


def test_mime_wrapped_base64_is_masked_line_by_line() -> None:
    long_value = "k" * 120
    wrapped = base64.encodebytes(long_value.encode()).decode()
    assert wrapped.count("\n") == 3
    assert Masker({"key": long_value}).mask(wrapped) == "***\n***\n***\n"


def test_surrounding_whitespace_of_a_value_does_not_matter() -> None:
    masker = Masker({"token": "tok-12345\n"})
    assert masker.mask("token=tok-12345;") == f"token={MASK};"


def test_no_form_contains_a_newline_or_is_short() -> None:
    value = {"pem": "-----BEGIN-----\r\nabcdefgh\nxy\n-----END-----\n", "n": [12345, 1.5, True]}
    forms = forms_of(value)
    assert forms
    assert all("\n" not in form and len(form) >= MIN_MASKED_LENGTH for form in forms)


def test_numbers_are_masked_as_their_text() -> None:
    masker = Masker({"pin": 123456, "ratio": 3.1415})
    assert masker.mask("pin 123456 ratio 3.1415") == f"pin {MASK} ratio {MASK}"


def test_values_that_are_not_encodable_do_not_break_the_masker() -> None:
    lone_surrogate = "\ud800secret-part"
    assert lone_surrogate in forms_of(lone_surrogate)
    assert "secret-value" in forms_of({(1, 2): "secret-value"})  # not JSON: leaves still count


# --- multi-line values -----------------------------------------------------------------------


MULTI_LINE = "-----BEGIN KEY-----\r\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\nok\n-----END KEY-----\n"


def test_multi_line_value_is_masked_line_by_line() -> None:
    masker = Masker({"key": MULTI_LINE})
    printed_separately = "first MIIEvQIBADANBgkq\nthen -----END KEY----- done\n"
    assert masker.mask(printed_separately) == f"first {MASK}\nthen {MASK} done\n"
    assert masker.mask(MULTI_LINE) == f"{MASK}\r\n{MASK}\n{MASK}\nok\n{MASK}\n"


def test_short_lines_of_a_multi_line_value_stay_and_are_reported() -> None:
    masker = Masker({"key": MULTI_LINE})
    assert masker.mask("ok") == "ok"
    assert masker.unmasked_names == ["key"]  # its line "ok" shows as it is


def test_json_dumps_of_a_multi_line_value_is_masked() -> None:
    masker = Masker({"key": MULTI_LINE})
    assert masker.mask(json.dumps({"key": MULTI_LINE})) == '{"key": "***"}'
    indented = json.dumps({"config": {"key": MULTI_LINE}}, indent=2)
    assert masker.mask(indented) == indented.replace(json.dumps(MULTI_LINE)[1:-1], MASK)
    assert "MIIEvQIBADANBgkq" not in masker.mask(indented)


# --- structured values -----------------------------------------------------------------------


DATABASE = {"host": "db.internal", "user": "svc-reporting", "password": "hunter2!x", "port": 5432}


def test_dict_value_is_masked_when_printed_as_a_dict() -> None:
    masker = Masker({"db": DATABASE})
    assert masker.mask(f"config: {DATABASE}") == f"config: {MASK}"
    assert masker.mask(json.dumps(DATABASE)) == MASK
    assert masker.mask(json.dumps(DATABASE, separators=(",", ":"))) == MASK


def test_dict_leaves_are_masked_on_their_own() -> None:
    masker = Masker({"db": DATABASE})
    line = f"connecting to {DATABASE['host']}:{DATABASE['port']} as {DATABASE['user']}"
    assert masker.mask(line) == f"connecting to {MASK}:{MASK} as {MASK}"
    partial = {"user": DATABASE["user"], "password": DATABASE["password"]}
    assert masker.mask(str(partial)) == f"{{'user': '{MASK}', 'password': '{MASK}'}}"


def test_dict_keys_are_not_secret() -> None:
    masker = Masker({"db": DATABASE})
    assert masker.mask("password host user") == "password host user"


def test_nested_values_and_lists_are_masked() -> None:
    value = {"tokens": ["first-token", {"deep": "deep-secret\nsecond-line"}]}
    masker = Masker({"nested": value})
    assert masker.mask(f"{value}") == MASK
    assert masker.mask("first-token deep-secret second-line") == f"{MASK} {MASK} {MASK}"
    assert masker.mask(repr(value["tokens"])) == MASK


def test_quotes_inside_a_value_are_masked_as_python_prints_them() -> None:
    value = {"password": 'it\'s "quoted"\n'}
    assert Masker({"v": value}).mask(f"x={value['password']!r}") == f"x='{MASK}'"


# --- the short-value rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", "a", "ab", "abc", "   ", " ab\n", 0, 7, 42, 3.5, True, False, None, {}, [], [1]]
)
def test_values_too_short_to_mask_are_reported_and_left_alone(value: object) -> None:
    masker = Masker({"short": value})
    text = f"value {value} in json {json.dumps(value)} and repr {value!r}"

    assert forms_of(value) == set()
    assert masker.unmasked_names == ["short"]
    assert masker.mask(text) == text
    assert masker.max_form_length == 0


def test_no_form_is_derived_from_a_short_value() -> None:
    assert Masker({"short": "ab"}).mask("YWI= YWI ab%20") == "YWI= YWI ab%20"


@pytest.mark.parametrize("value", ["abcd", 1234, -123, 1.25])
def test_values_of_exactly_four_characters_are_masked(value: object) -> None:
    masker = Masker({"just-long-enough": value})
    assert masker.unmasked_names == []
    assert masker.mask(f"[{value}]") == f"[{MASK}]"


def test_unmasked_names_are_listed_once_in_order() -> None:
    masker = Masker({"empty": "", "long": "long-enough", "flag": True})
    masker.add("late", 7)
    masker.add("empty", "")
    assert masker.unmasked_names == ["empty", "flag", "late"]


@pytest.mark.parametrize(
    "value",
    [
        {"user": "ab", "password": "long-password-1"},
        {"nested": [{"port": 7}], "token": "long-token-value"},
        "first line is long\nok\n",
        ["long-list-item", "xy"],
    ],
)
def test_a_value_with_a_part_too_short_to_mask_is_reported(value: object) -> None:
    masker = Masker({"partly": value})
    assert masker.forms  # the rest of it is masked
    assert masker.unmasked_names == ["partly"]


@pytest.mark.parametrize(
    "value",
    [
        {"user": "long-user-name", "password": "long-password-1", "tls": True, "ca": None},
        {"empty": "", "nothing": [], "port": 5432},
        "line one is long\n\nline three also\n",
    ],
)
def test_a_value_whose_every_part_is_masked_is_not_reported(value: object) -> None:
    assert Masker({"whole": value}).unmasked_names == []


# --- the fragment rule -----------------------------------------------------------------------

LONG_SECRET = "Zq7vK2pX9mW4tR8yB3nL6cH1sD5fG0jQ-e_uA" * 9  # 333 characters, no "*"


def windows(value: str, length: int = MIN_FRAGMENT_LENGTH) -> set[str]:
    return {value[start : start + length] for start in range(len(value) - length + 1)}


def shows_a_fragment(output: str, value: str) -> bool:
    return any(window in output for window in windows(value))


def test_a_long_value_quoted_short_by_int_leaks_no_fragment() -> None:
    with pytest.raises(ValueError, match="invalid literal") as raised:
        int(LONG_SECRET)
    message = f"ValueError: {raised.value}"
    assert LONG_SECRET[:150] in message  # int() quotes the value cut short: not the whole value

    masked = Masker({"token": LONG_SECRET}).mask(message)

    assert masked == f"ValueError: invalid literal for int() with base 10: '{MASK}"
    assert not shows_a_fragment(masked, LONG_SECRET)


@pytest.mark.parametrize(
    "excerpt",
    [
        lambda s: f"input_value='{s[:24]}...{s[-24:]}', input_type=str",  # pydantic
        lambda s: f"got {s[:200]}",  # C's %.200s
        lambda s: f"{s[100:116]}",  # a run of exactly the minimum length, anywhere
        lambda s: f"key={s[:40]}\nmore={s[-17:]}",
    ],
)
def test_excerpts_of_a_long_value_are_masked(excerpt: Callable[[str], str]) -> None:
    text = excerpt(LONG_SECRET)
    masked = Masker({"token": LONG_SECRET}).mask(text)
    assert not shows_a_fragment(masked, LONG_SECRET)
    assert MASK in masked


def test_runs_shorter_than_the_minimum_stay() -> None:
    masker = Masker({"token": LONG_SECRET})
    short_run = LONG_SECRET[5 : 5 + MIN_FRAGMENT_LENGTH - 1]
    assert masker.mask(f"[{short_run}]") == f"[{short_run}]"
    reprlib_like = f"'{LONG_SECRET[:12]}...{LONG_SECRET[-13:]}'"  # documented: not masked
    assert masker.mask(reprlib_like) == reprlib_like


def test_fragments_of_encoded_forms_are_masked() -> None:
    masker = Masker({"token": LONG_SECRET})
    encoded = base64.b64encode(LONG_SECRET.encode()).decode()
    assert (
        masker.mask(f"Authorization: Basic {encoded[:60]}...") == f"Authorization: Basic {MASK}..."
    )


def test_values_shorter_than_the_minimum_give_no_fragments() -> None:
    value = "fifteen-chars-x"
    assert len(value) == MIN_FRAGMENT_LENGTH - 1
    assert Masker({"v": value}).mask(value[:-1]) == value[:-1]


def test_the_json_of_a_structured_value_gives_no_fragments() -> None:
    masker = Masker({"db": {"username": "svc-reporting", "password": "long-password-value"}})
    innocent = json.dumps({"username": "someone-else", "password": "another-one"})
    assert masker.mask(innocent) == innocent
    assert masker.mask("password=long-password-va") == f"password={MASK}"


def test_a_long_value_printed_whole_is_one_mask() -> None:
    masker = Masker({"token": LONG_SECRET})
    assert masker.mask(f"<{LONG_SECRET}>") == f"<{MASK}>"
    assert masker.mask(f"<{LONG_SECRET}{LONG_SECRET[:20]}>") == f"<{MASK}>"


def test_innocent_text_sharing_short_runs_with_a_value_is_unchanged() -> None:
    masker = Masker({"dsn": "postgresql://reporting:Zq7vK2pX9mW4tR8y@db.internal:5432/prod"})
    innocent = "postgresql://other@db.example:5432/test https://www.example.org/"
    assert masker.mask(innocent) == innocent


# --- whole-text masking ----------------------------------------------------------------------


def test_text_without_secrets_is_unchanged() -> None:
    text = "nothing to see here\n" * 10
    assert Masker({"a": "secret-value"}).mask(text) == text
    assert Masker().mask(text) == text
    assert Masker().mask("") == ""


def test_every_occurrence_is_masked() -> None:
    masker = Masker({"a": "secret-value"})
    assert masker.mask("secret-value, secret-value.") == f"{MASK}, {MASK}."


@pytest.mark.parametrize(
    ("values", "text", "expected"),
    [
        (["abcdef", "defghi"], "xx abcdefghi yy", "xx *** yy"),
        (["defghi", "abcdef"], "xx abcdefghi yy", "xx *** yy"),
        (["abcdefgh", "cdef"], "abcdefgh cdef", "*** ***"),
        (["abcd", "wxyz"], "abcdwxyz", "***"),
        (["abcd"], "abcdabcd abcd", "*** ***"),
        (["aaaa"], "aaaaaaa", "***"),
        (["abcd", "bcdefg", "fghijk"], "-abcdefghijk-", "-***-"),
    ],
)
def test_overlapping_and_adjacent_values_are_masked_as_their_union(
    values: list[str], text: str, expected: str
) -> None:
    masker = Masker({f"v{index}": value for index, value in enumerate(values)})
    assert masker.mask(text) == expected


def test_longest_value_wins_over_its_prefix() -> None:
    masker = Masker({"short": "secret", "long": "secret-and-more"})
    assert masker.mask("secret-and-more!") == f"{MASK}!"
    assert masker.mask("secret-and-mo") == f"{MASK}-and-mo"


def test_value_added_later_is_masked_from_then_on() -> None:
    masker = Masker({"first": "first-secret"})
    assert masker.mask("late-secret") == "late-secret"
    masker.add("late", "late-secret")
    assert masker.mask("first-secret late-secret") == f"{MASK} {MASK}"


def test_masking_a_megabyte_with_a_hundred_secrets_is_fast() -> None:
    generator = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/+ "
    secrets = {
        f"s{index}": "".join(generator.choices(alphabet, k=generator.randint(8, 48)))
        for index in range(100)
    }
    text = "".join(generator.choices(alphabet + "\n", k=1_000_000))
    text = text[:500_000] + secrets["s42"] + text[500_000:]
    masker = Masker(secrets)

    started = time.perf_counter()
    output = masker.mask(text)
    elapsed = time.perf_counter() - started

    assert secrets["s42"] not in output
    assert elapsed < 5  # typically 0.1 s; the bound only catches a quadratic regression


def test_many_values_that_are_prefixes_of_each_other_compile_and_mask() -> None:
    masker = Masker({f"v{length}": "x" * length for length in range(4, 300)})
    assert masker.mask("-" + "x" * 150 + "-" + "x" * 500 + "-") == "-***-***-"


def test_long_values_compile_and_mask() -> None:
    certificate = "".join(chr(ord("A") + index % 26) for index in range(6000))
    masker = Masker({"certificate": certificate})
    encoded = base64.b64encode(certificate.encode()).decode()
    assert masker.mask(f"[{certificate}] [{encoded}]") == "[***] [***]"


# --- streaming -------------------------------------------------------------------------------


CANARY = "canary-7f3a9c"


def test_complete_lines_are_emitted_at_once() -> None:
    stream = Masker({"canary": CANARY}).stream()
    assert stream.write("line with no secret\n") == "line with no secret\n"
    assert stream.write(f"a {CANARY} b\nrest") == f"a {MASK} b\n"
    assert stream.flush() == "rest"


def test_unfinished_line_is_held_back_only_as_far_as_a_value_could_reach() -> None:
    masker = Masker({"canary": CANARY})
    stream = masker.stream()
    text = "x" * 100
    emitted = stream.write(text)
    assert emitted == text[: len(text) - (masker.max_form_length - 1)]
    assert emitted + stream.flush() == text


def test_stream_without_secrets_holds_nothing_back() -> None:
    stream = Masker({"short": "ab"}).stream()
    assert stream.write("partial") == "partial"
    assert stream.flush() == ""


def test_flush_returns_the_masked_rest() -> None:
    stream = Masker({"canary": CANARY}).stream()
    emitted = stream.write(f"ends with {CANARY}")
    assert CANARY[:4] not in emitted
    assert emitted + stream.flush() == f"ends with {MASK}"
    assert stream.flush() == ""


@pytest.mark.parametrize("cut", range(len(CANARY) + 1))
def test_value_split_across_two_writes_is_masked(cut: int) -> None:
    masker = Masker({"canary": CANARY})
    for text in (f"log {CANARY} end\n", f"log {CANARY}"):
        cut_in_text = len("log ") + cut
        output = stream_all(masker.stream(), [text[:cut_in_text], text[cut_in_text:]])
        assert output == masker.mask(text)
        assert CANARY not in output


def test_every_form_split_anywhere_across_writes_is_masked() -> None:
    """The longest form decides the hold-back, so splitting it at its first character matters."""
    masker = Masker({"secret": SECRET})
    for form in masker.forms:
        text = f"log {form}"
        for cut in range(len(text) + 1):
            output = stream_all(masker.stream(), [text[:cut], text[cut:]])
            assert output == f"log {MASK}", (form, cut)


def test_value_written_one_character_at_a_time_is_masked() -> None:
    masker = Masker({"canary": CANARY, "db": DATABASE})
    text = f"a {CANARY} b {DATABASE}\n{base64.b64encode(CANARY.encode()).decode()} c"
    stream = masker.stream()
    output = stream_all(stream, list(text))
    assert output == f"a {MASK} b {MASK}\n{MASK} c"


@pytest.mark.parametrize("cut", range(1, len("abcdefghi")))
def test_overlapping_values_split_across_writes_give_one_mask(cut: int) -> None:
    masker = Masker({"left": "abcdef", "right": "defghi"})
    text = "xx abcdefghi yy"
    output = stream_all(masker.stream(), [text[: 3 + cut], text[3 + cut :]])
    assert output == "xx *** yy"


def test_match_at_the_cut_is_held_until_it_cannot_grow() -> None:
    stream = Masker({"short": "abcdef", "long": "abcdef-and-then-some-more"}).stream()
    emitted = stream.write("x" * 40 + "abcdef")
    assert emitted == "x" * len(emitted)  # not "...***": the longer value may follow
    assert emitted + stream.write("-and-then-some-more\n") == "x" * 40 + "***\n"


def test_value_added_mid_stream_masks_text_not_yet_emitted() -> None:
    masker = Masker({"early": "e" * 30})
    stream = masker.stream()
    emitted = stream.write("token: new-sec")
    assert emitted == ""
    masker.add("late", "new-secret-value")
    emitted += stream.write("ret-value\nagain new-secret-value\n")
    assert emitted + stream.flush() == f"token: {MASK}\nagain {MASK}\n"


def test_canary_never_appears_for_random_chunkings() -> None:
    generator = random.Random(1234)
    masker = Masker({"canary": CANARY})
    encoded = base64.b64encode(CANARY.encode()).decode()
    text = f"start {CANARY}\n{CANARY}{CANARY} {encoded} {json.dumps({'c': CANARY})} end"
    for _ in range(200):
        cuts = [generator.randint(0, len(text)) for _ in range(generator.randint(0, 30))]
        output = stream_all(masker.stream(), split_at(text, cuts))
        assert CANARY not in output
        assert encoded not in output
        assert output == masker.mask(text)


# --- properties ------------------------------------------------------------------------------

# "*" is left out of secrets: the mask itself next to a leftover "*" could spell such a value.
secret_characters = st.one_of(
    st.characters(exclude_categories=["Cs"], exclude_characters="*"),
    st.sampled_from(list("\n\r\t \"'\\/+=%&:{}[],")),
)
# A value whose stripped text is short is not masked at all (see the short-value tests).
secrets = st.text(alphabet=secret_characters, min_size=MIN_MASKED_LENGTH, max_size=24).filter(
    lambda value: len(value.strip()) >= MIN_MASKED_LENGTH
)
surroundings = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from("\n*ab")),
    max_size=40,
)


@st.composite
def chunkings(draw: st.DrawFn, text: str) -> list[str]:
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=12))
    return split_at(text, cuts)


@settings(deadline=None, max_examples=200)
@given(
    secret=secrets, before=surroundings, between=surroundings, after=surroundings, data=st.data()
)
def test_streamed_output_never_contains_the_secret(
    secret: str, before: str, between: str, after: str, data: st.DataObject
) -> None:
    masker = Masker({"secret": secret})
    encoded = base64.b64encode(secret.encode()).decode()
    text = f"{before}{secret}{between}{encoded}{after}"
    chunks = data.draw(chunkings(text))

    output = stream_all(masker.stream(), chunks)

    assert output == masker.mask(text)
    for line in secret_lines(secret):
        assert line not in output
    assert encoded not in output
    assert encoded.rstrip("=") not in output


@settings(deadline=None, max_examples=150)
@given(
    values=st.lists(secrets, min_size=1, max_size=3),
    pieces=st.lists(st.one_of(surroundings, st.integers(0, 2)), max_size=8),
    data=st.data(),
)
def test_stream_masks_exactly_like_whole_text_for_several_values(
    values: list[str], pieces: list[str | int], data: st.DataObject
) -> None:
    masker = Masker({f"v{index}": value for index, value in enumerate(values)})
    text = "".join(
        values[piece % len(values)] if isinstance(piece, int) else piece for piece in pieces
    )
    chunks = data.draw(chunkings(text))

    output = stream_all(masker.stream(), chunks)

    assert output == masker.mask(text)
    for value in values:
        for line in secret_lines(value):
            assert line not in output


@settings(deadline=None, max_examples=100)
@given(secret=secrets, text=surroundings, data=st.data())
def test_every_complete_line_is_emitted_by_the_write_that_completes_it(
    secret: str, text: str, data: st.DataObject
) -> None:
    masker = Masker({"secret": secret})
    stream = masker.stream()
    written = emitted = ""
    for chunk in data.draw(chunkings(text + secret + text)):
        written += chunk
        emitted += stream.write(chunk)
        complete_lines = written[: written.rfind("\n") + 1]
        assert emitted[: emitted.rfind("\n") + 1] == masker.mask(complete_lines)
        assert emitted.count("\n") == written.count("\n")  # neither the mask nor a form has one


long_secrets = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="*\n"),
        st.sampled_from(list("abcdef0123456789")),
    ),
    min_size=MIN_FRAGMENT_LENGTH,
    max_size=120,
)


@settings(deadline=None, max_examples=200)
@given(secret=long_secrets, before=surroundings, after=surroundings, data=st.data())
def test_a_fragment_split_anywhere_across_writes_is_masked(
    secret: str, before: str, after: str, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(secret) - MIN_FRAGMENT_LENGTH))
    end = data.draw(st.integers(start + MIN_FRAGMENT_LENGTH, len(secret)))
    masker = Masker({"secret": secret})
    text = f"{before}{secret[start:end]}{after}"

    output = stream_all(masker.stream(), data.draw(chunkings(text)))

    assert output == masker.mask(text)
    assert not shows_a_fragment(output, secret)


def reference_spans(masker: Masker, values: list[object], text: str) -> list[tuple[int, int]]:
    """What the rules say, the slow way: every occurrence of every form, and every window of
    ``MIN_FRAGMENT_LENGTH`` characters found in a fragment source; merged."""
    covered = [False] * (len(text) + 1)
    for form in masker.forms:
        start = text.find(form)
        while start >= 0:
            covered[start : start + len(form)] = [True] * len(form)
            start = text.find(form, start + 1)
    fragment_windows = {
        w for value in values for s in fragment_sources_of(value) for w in windows(s)
    }
    for start in range(len(text) - MIN_FRAGMENT_LENGTH + 1):
        if text[start : start + MIN_FRAGMENT_LENGTH] in fragment_windows:
            covered[start : start + MIN_FRAGMENT_LENGTH] = [True] * MIN_FRAGMENT_LENGTH
    spans: list[tuple[int, int]] = []
    for index, masked in enumerate(covered[: len(text)]):
        if masked and spans and spans[-1][1] == index:
            spans[-1] = (spans[-1][0], index + 1)
        elif masked:
            spans.append((index, index + 1))
    return spans


pieces_of_values = st.one_of(
    long_secrets,
    st.text(alphabet="abx-Zq7\n", min_size=4, max_size=40),
    st.dictionaries(st.sampled_from(["user", "password", "port"]), long_secrets, max_size=2),
)


@settings(deadline=None, max_examples=300)
@given(values=st.lists(pieces_of_values, min_size=1, max_size=3), data=st.data())
def test_masked_spans_are_exactly_what_the_rules_say(
    values: list[object], data: st.DataObject
) -> None:
    masker = Masker({f"v{index}": value for index, value in enumerate(values)})
    material = [*sorted(masker.forms), "xxxx", "ab", "\n", " ", "Zq7"]
    parts = data.draw(
        st.lists(
            st.tuples(st.sampled_from(material), st.integers(0, 60), st.integers(0, 60)), max_size=8
        )
    )
    text = "".join(form[start : start + length] for form, start, length in parts)

    assert masker.masked_spans(text) == reference_spans(masker, values, text)
