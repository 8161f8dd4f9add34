"""Streaming secret masker: replaces every resolved secret value in a script's output with ``***``.

A value is masked in every form a script is likely to print it in: the text itself (and its
whitespace-stripped text), base64 (standard, URL-safe, with and without ``=`` padding, and
MIME-wrapped), URL-encoded (``quote``, ``quote_plus``), JSON-escaped and Python-escaped (as inside
``repr``). A list or dict value is also masked as its JSON and its ``repr`` (``print(d)``), and
every leaf of it is masked on its own. No form contains a newline: a multi-line form is masked line
by line, so output can be masked one line at a time and a complete line is never held back.

Fragment rule: any run of ``MIN_FRAGMENT_LENGTH`` (16) or more consecutive characters of a string
or number leaf's form (a line of it, for a multi-line value) is masked too, wherever it shows: so a
value cut short by a message (``int()`` quotes the first 199 characters, pydantic 24 at each end)
or printed in part leaks no run of 16 characters. Sixteen characters of a random token carry 64
(hex) to 96 (base64) bits, so innocent output matches one by chance with negligible probability,
while the boilerplate values start with (``https://www.``, ``postgresql://``, ``-----BEGIN ``) is
shorter and stays visible; a run of up to 15 characters is not masked (reprlib's 12-character
halves are not). The JSON and ``repr`` of a structured value give no fragments: their runs of key
names and punctuation are not secret. Runs are found with anchors: 8-character substrings of each
form at most 9 apart (so a run of 16 characters always holds one), found in the same regex pass as
the shorter forms and then extended both ways; a form of ``n`` characters costs about ``n / 9``
anchors.

Short-value rule: a value, line or form shorter than ``MIN_MASKED_LENGTH`` (4) characters is not
masked. Replacing ``"a"`` or ``"42"`` everywhere would wreck the output, and the holes left would
reveal the value by elimination anyway. No forms are derived from a short value either, so the
base64 of ``"ab"`` stays visible too. Booleans and null are never secret. The names whose value
yields no form at all (``""``, ``"ab"``, ``7``, ``true``, ``{}``), or has a part too short to mask
(a leaf ``"ab"`` of a dict, a line ``"ok"`` of a multi-line value), are listed in
``Masker.unmasked_names`` so callers can report them instead of silently leaking them.

When matches overlap (values ``abcdef`` and ``defghi`` in ``abcdefghi``) the union of the matches
is masked, and overlapping or adjacent matches become a single ``***``. A stream masks exactly like
``Masker.mask`` on the whole text, however the text is split into writes. Pure: no I/O here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_MASKED_LENGTH = 4
MIN_FRAGMENT_LENGTH = 16
_ANCHOR_LENGTH = 8
# Anchors at most this far apart: a run of MIN_FRAGMENT_LENGTH characters then holds a whole one.
_ANCHOR_STRIDE = MIN_FRAGMENT_LENGTH - _ANCHOR_LENGTH + 1
# Characters output is full of, the most common first. The regex looks further at each position
# whose character starts an anchor, so anchors start with rarer ones where they can (measured on
# bench_fx_ef's log lines: 1.25x the time of masking without fragments, 1.6x with anchors at
# every 9th offset).
_COMMON_IN_OUTPUT = " etaoinsrhldcumpfgwyb0123456789.,:=/-_vkxjqz'\"()[]{};"
_COMMONNESS = {
    character: len(_COMMON_IN_OUTPUT) - rank for rank, character in enumerate(_COMMON_IN_OUTPUT)
}

# Deeper than this the pattern falls back to a flat alternation, which keeps both Python's and the
# regex compiler's recursion bounded whatever the values are.
_MAX_PATTERN_NESTING = 64


def forms_of(value: object) -> set[str]:
    """Every string that must be masked so that ``value`` does not show in output."""
    leaves: set[str] = set()
    wholes: set[str] = set()
    _collect_base_strings(value, leaves, wholes)
    return _line_forms(leaves) | _line_forms(wholes)


def fragment_sources_of(value: object) -> set[str]:
    """The forms of ``value`` whose every run of ``MIN_FRAGMENT_LENGTH`` characters is masked."""
    leaves: set[str] = set()
    _collect_base_strings(value, leaves, set())
    return {form for form in _line_forms(leaves) if len(form) >= MIN_FRAGMENT_LENGTH}


def has_unmaskable_part(value: object) -> bool:
    """Whether ``value`` holds a leaf, or a line of one, too short to be masked but not empty."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, list | tuple | dict):
        leaves: Iterable[object] = value.values() if isinstance(value, dict) else value
        return any(has_unmaskable_part(leaf) for leaf in leaves)
    text = value if isinstance(value, str) else str(value)
    return any(0 < len(line.strip()) < MIN_MASKED_LENGTH for line in text.split("\n"))


def _line_forms(texts: set[str]) -> set[str]:
    forms: set[str] = set()
    for text in texts:
        if len(text) >= MIN_MASKED_LENGTH:
            forms.update(_encodings(text))
    return {line for form in forms for line in _lines(form) if len(line) >= MIN_MASKED_LENGTH}


def _collect_base_strings(value: object, leaves: set[str], wholes: set[str]) -> None:
    """The texts a value is printed as before any encoding: the text of each string or number
    leaf, and the JSON and repr of each structure."""
    if value is None or isinstance(value, bool):
        return  # a boolean or null carries no secret, and "True" is not worth masking
    if isinstance(value, str):
        if len(value.strip()) < MIN_MASKED_LENGTH:
            return  # " ab\n" is as short as "ab": spaces around a value reveal nothing
        leaves.add(value)
        leaves.add(value.strip())  # secrets read from files often carry a trailing newline
    elif isinstance(value, int | float):
        leaves.add(str(value))
        leaves.add(json.dumps(value))
    elif isinstance(value, list | tuple | dict):
        wholes.update(_json_dumps(value))
        wholes.add(repr(value))
        items: Iterable[object] = value.values() if isinstance(value, dict) else value
        for leaf in items:  # dict keys are names, not secrets
            _collect_base_strings(leaf, leaves, wholes)
    else:
        leaves.add(str(value))


def _json_dumps(value: object) -> set[str]:
    """The JSON texts a script may print a structured value as (compact, default, non-ASCII)."""
    try:
        return {
            json.dumps(value, separators=separators, ensure_ascii=ensure_ascii)
            for separators in ((",", ":"), (", ", ": "))
            for ensure_ascii in (True, False)
        }
    except (TypeError, ValueError):  # not JSON after all; its repr and leaves still get masked
        return set()


def _encodings(text: str) -> set[str]:
    """``text`` and its encoded forms: base64, URL-encoded, JSON- and Python-escaped."""
    raw = text.encode("utf-8", "surrogatepass")
    standard = base64.b64encode(raw).decode("ascii")
    urlsafe = base64.urlsafe_b64encode(raw).decode("ascii")
    return {
        text,
        standard,
        standard.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        base64.encodebytes(raw).decode("ascii"),  # wrapped at 76 columns, masked line by line
        quote(raw, safe=""),
        quote(raw),
        quote_plus(raw),
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1],  # how a string shows inside print(a_dict) or print(a_list)
    }


def _lines(form: str) -> list[str]:
    """The lines of a form, without line ends; output is masked line by line."""
    if "\n" not in form:
        return [form]
    return [line.rstrip("\r") for line in form.split("\n")]


def _common_prefix(first: str, last: str) -> str:
    """Longest common prefix of the first and last of a sorted list, so of the whole list."""
    length = 0
    for left, right in zip(first, last, strict=False):
        if left != right:
            break
        length += 1
    return first[:length]


def _alternation(suffixes: list[str], depth: int = 0) -> str:
    """A regex matching the longest of the sorted, distinct ``suffixes`` that fits.

    The forms are laid out as a prefix tree so the regex engine looks at the few branches that
    start with the next character instead of trying every form at every position.
    """
    may_end_here = suffixes[0] == ""
    rest = suffixes[1:] if may_end_here else suffixes
    if depth >= _MAX_PATTERN_NESTING:
        branches = [re.escape(suffix) for suffix in sorted(rest, key=len, reverse=True)]
    else:
        branches = []
        start = 0
        while start < len(rest):
            end = start + 1
            while end < len(rest) and rest[end][0] == rest[start][0]:
                end += 1
            group = rest[start:end]
            prefix = _common_prefix(group[0], group[-1])
            branch = re.escape(prefix)
            if len(group) > 1:
                branch += _alternation([member[len(prefix) :] for member in group], depth + 1)
            branches.append(branch)
            start = end
    body = "|".join(branches)
    # Greedy "?" tries the longer forms first and ends here only when none of them fits.
    return f"(?:{body})?" if may_end_here else f"(?:{body})"


def _shared_after(text: str, at: int, source: str, offset: int) -> int:
    """How many characters ``text[at:]`` and ``source[offset:]`` have in common from the start.

    Compares slices of doubling length, then halves the last one: C-speed comparisons, and a
    number of them logarithmic in the length of the run.
    """
    limit = min(len(text) - at, len(source) - offset)
    agreed, step = 0, 16
    while agreed < limit:
        differs_within = min(agreed + step, limit)
        if (
            text[at + agreed : at + differs_within]
            != source[offset + agreed : offset + differs_within]
        ):
            break
        agreed, step = differs_within, step * 2
    else:
        return limit
    while differs_within - agreed > 1:
        middle = (agreed + differs_within) // 2
        if text[at + agreed : at + middle] == source[offset + agreed : offset + middle]:
            agreed = middle
        else:
            differs_within = middle
    return agreed


def _shared_before(text: str, at: int, source: str, offset: int) -> int:
    """How many characters ``text[:at]`` and ``source[:offset]`` have in common at their ends."""
    limit = min(at, offset)
    agreed, step = 0, 16
    while agreed < limit:
        differs_within = min(agreed + step, limit)
        if (
            text[at - differs_within : at - agreed]
            != source[offset - differs_within : offset - agreed]
        ):
            break
        agreed, step = differs_within, step * 2
    else:
        return limit
    while differs_within - agreed > 1:
        middle = (agreed + differs_within) // 2
        if text[at - middle : at - agreed] == source[offset - middle : offset - agreed]:
            agreed = middle
        else:
            differs_within = middle
    return agreed


class _Matcher:
    """Finds what to mask in a text: every occurrence of a whole form, and every run of
    ``MIN_FRAGMENT_LENGTH`` or more characters shared with a fragment source.

    A run of that length holds a whole anchor (the ``_ANCHOR_LENGTH`` characters of a source at a
    multiple of ``_ANCHOR_STRIDE``); each anchor found is extended both ways along every source it
    came from, to the longest run the two share. A fragment source printed whole is such a run, so
    only the other forms (shorter ones, and those of structures) need matching whole. One regex
    finds where a form or an anchor starts (one pass over the text); only there is more done.
    """

    def __init__(self, forms: set[str], sources: set[str]) -> None:
        self._sources = sorted(sources)
        self._anchors: dict[str, list[tuple[int, int]]] = {}
        first_characters: set[str] = set()
        for index, source in enumerate(self._sources):
            for offset in _anchor_offsets(source, first_characters):
                anchor = source[offset : offset + _ANCHOR_LENGTH]
                self._anchors.setdefault(anchor, []).append((index, offset))
                first_characters.add(anchor[0])
        whole_forms = forms - sources
        self._whole_forms = re.compile(_alternation(sorted(whole_forms))) if whole_forms else None
        starts = whole_forms | self._anchors.keys()
        self._starts = re.compile(_alternation(sorted(starts))) if starts else None
        # How far a window holding an anchor, or a whole form, reaches from where it starts.
        self._reach = (
            max(MIN_FRAGMENT_LENGTH, *map(len, whole_forms))
            if whole_forms
            else (MIN_FRAGMENT_LENGTH)
        )

    def spans(self, text: str) -> list[tuple[int, int]]:
        """What to mask, possibly overlapping, in no particular order.

        Everything that can start at a position lies within its ``_reach_of``; where that is
        masked already the position is skipped, and so are the next ones up to where their reach
        may leave the masked stretch: a long value printed whole costs a few looks, not one per
        anchor in it.
        """
        if self._starts is None:
            return []
        spans: list[tuple[int, int]] = []
        run_end_by_alignment: dict[tuple[int, int], int] = {}
        masked_start = masked_end = -1  # the latest stretch of overlapping spans
        position = 0
        while (hit := self._starts.search(text, position)) is not None:
            at = hit.start()
            position = at + 1  # matches may overlap: look again from the next character
            low, high = self._reach_of(text, at)
            if masked_start <= low and high <= masked_end:
                position = max(position, self._next_look(text, masked_end))
                continue
            found = self._runs_at(text, at, run_end_by_alignment)
            if self._whole_forms is not None:
                form = self._whole_forms.match(text, at)
                if form is not None:
                    found.append(form.span())
            for start, end in found:
                spans.append((start, end))
                if start <= masked_end and end >= masked_start:
                    masked_start, masked_end = min(start, masked_start), max(end, masked_end)
                elif end > masked_end:
                    masked_start, masked_end = start, end
        return spans

    def _runs_at(
        self, text: str, at: int, run_end_by_alignment: dict[tuple[int, int], int]
    ) -> list[tuple[int, int]]:
        """The runs through the anchor at ``at``, if one starts there, along each of its sources."""
        runs: list[tuple[int, int]] = []
        for index, offset in self._anchors.get(text[at : at + _ANCHOR_LENGTH], ()):
            alignment = (index, at - offset)
            if run_end_by_alignment.get(alignment, -1) > at:
                continue  # inside a run already found along this alignment
            source = self._sources[index]
            start = at - _shared_before(text, at, source, offset)
            after = at + _ANCHOR_LENGTH
            end = after + _shared_after(text, after, source, offset + _ANCHOR_LENGTH)
            run_end_by_alignment[alignment] = end
            if end - start >= MIN_FRAGMENT_LENGTH:
                runs.append((start, end))
        return runs

    def _reach_of(self, text: str, at: int) -> tuple[int, int]:
        """Where a form starting at ``at``, or a window holding an anchor there, may lie: within
        the line (no form holds a newline) and within the text."""
        low = max(at + _ANCHOR_LENGTH - MIN_FRAGMENT_LENGTH, 0)
        newline = text.rfind("\n", low, at)
        if newline >= 0:
            low = newline + 1
        high = min(at + self._reach, len(text))
        newline = text.find("\n", at, high)
        if newline >= 0:
            high = newline
        return low, high

    def _next_look(self, text: str, masked_end: int) -> int:
        """Where the next position that may mask more can be, after one inside a masked stretch:
        the reach of a later position starts no earlier, and stays inside the stretch until
        ``_reach`` before its end, or until its end where the line ends there."""
        if masked_end == len(text) or text.startswith("\n", masked_end):
            return masked_end
        return masked_end - self._reach + 1


def _anchor_offsets(source: str, first_characters: set[str]) -> list[int]:
    """Where ``source`` gets anchors: no more than ``_ANCHOR_STRIDE`` apart, the first within a
    stride of the start and the last at most ``MIN_FRAGMENT_LENGTH`` from the end, so that every
    run of ``MIN_FRAGMENT_LENGTH`` characters of it holds one whole. Within each stride the
    anchor starts with the character rarest in output, preferring one already used."""
    last = len(source) - _ANCHOR_LENGTH
    offsets: list[int] = []
    previous = -1  # the first anchor within [0, _ANCHOR_STRIDE - 1]
    while previous < len(source) - MIN_FRAGMENT_LENGTH:
        candidates = range(previous + 1, min(previous + _ANCHOR_STRIDE, last) + 1)
        previous = min(
            candidates,
            key=lambda offset: (
                _COMMONNESS.get(source[offset], 0),
                source[offset] not in first_characters,
                -offset,
            ),
        )
        offsets.append(previous)
    return offsets


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent spans covering the same characters as ``spans``."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _render(text: str, spans: list[tuple[int, int]], stop: int) -> str:
    """``text[:stop]`` with each span replaced by the mask; no span may cross ``stop``."""
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        if start >= stop:
            break
        pieces.append(text[position:start])
        pieces.append(MASK)
        position = end
    pieces.append(text[position:stop])
    return "".join(pieces)


class Masker:
    """Masks the values of a run's secrets; values resolved during the run can be added."""

    def __init__(self, secrets: Mapping[str, object] | None = None) -> None:
        self._forms: set[str] = set()
        self._fragment_sources: set[str] = set()
        self._unmasked_names: list[str] = []
        self._matcher: _Matcher | None = None
        self._pattern_is_stale = False
        self._max_form_length = 0
        for name, value in (secrets or {}).items():
            self.add(name, value)

    def add(self, name: str, value: object) -> None:
        """Mask ``value`` from now on, also in streams already open."""
        forms = forms_of(value)
        if (not forms or has_unmaskable_part(value)) and name not in self._unmasked_names:
            self._unmasked_names.append(name)
        if forms <= self._forms:
            return
        self._forms |= forms
        self._fragment_sources |= fragment_sources_of(value)
        self._max_form_length = max(self._max_form_length, *map(len, forms))
        self._pattern_is_stale = True  # recompiled on next use, once for many adds

    @property
    def unmasked_names(self) -> list[str]:
        """Names whose value, or a leaf or line of it, is too short (or boolean, null, empty)
        to be masked."""
        return list(self._unmasked_names)

    @property
    def forms(self) -> frozenset[str]:
        """Every string currently masked."""
        return frozenset(self._forms)

    @property
    def max_form_length(self) -> int:
        """Length of the longest masked string: how much a stream must hold back."""
        return self._max_form_length

    def masked_spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted, disjoint, non-adjacent ``(start, end)`` spans of ``text`` to hide."""
        matcher = self._compiled()
        if matcher is None:
            return []
        spans = matcher.spans(text)
        return _union(spans) if spans else spans

    def mask(self, text: str) -> str:
        """``text`` with every secret form replaced by the mask."""
        spans = self.masked_spans(text)
        return _render(text, spans, len(text)) if spans else text

    def stream(self) -> MaskingStream:
        """A masker for output that arrives in pieces (a pipe, a log follower)."""
        return MaskingStream(self)

    def _compiled(self) -> _Matcher | None:
        if self._pattern_is_stale:
            self._matcher = _Matcher(self._forms, self._fragment_sources)
            self._pattern_is_stale = False
        return self._matcher


class MaskingStream:
    """Masks text written in chunks, also a value split across writes.

    No form contains a newline, so text up to the last newline is emitted at once. Of the last,
    unfinished line the final ``max_form_length - 1`` characters are held back, since they may be
    the start of a value; so is a match that reaches the cut, as the next write may extend it.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._pending = ""

    def write(self, chunk: str) -> str:
        """Masked text that is safe to emit now; the rest waits for more text or ``flush``."""
        text = self._pending + chunk
        spans = self._masker.masked_spans(text)
        hold_back = max(self._masker.max_form_length - 1, 0)
        cut = max(text.rfind("\n") + 1, len(text) - hold_back)
        for start, end in reversed(spans):
            if end < cut:
                break
            if start < cut:  # the next write may extend this match: hold all of it back
                cut = start
                break
        self._pending = text[cut:]
        return _render(text, spans, cut)

    def flush(self) -> str:
        """The masked rest of the text, at the end of the stream."""
        text, self._pending = self._pending, ""
        return self._masker.mask(text)
