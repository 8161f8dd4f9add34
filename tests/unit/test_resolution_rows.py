"""How a resolution picks its winners from the rows read (the domain's precedence rule,
domain/precedence.py) and lists them for its audit record (storage/secret_store.py), apart from
any database."""

from __future__ import annotations

import json

from fx_operator.domain.precedence import most_specific as _most_specific
from fx_operator.storage.secret_store import _resolution_entries
from hypothesis import given
from hypothesis import strategies as st

SCOPES = ("package", "project", "platform")
KEYS = {scope: f"{i:02x}" * 16 for i, scope in enumerate(SCOPES)}  # one data key per owner


def blob(scope: str) -> bytes:
    """A value blob's header as crypto writes it (format 1, the data key's id); no value."""
    return b"\x01" + bytes.fromhex(KEYS[scope])


def test_the_most_specific_scope_wins_whatever_the_order_and_batches() -> None:
    rows = [("platform", "A", 7, b"a3"), ("package", "B", 1, b"b1"), ("project", "A", 2, b"a2"),
            ("platform", "C", 1, b"c3"), ("project", "B", 9, b"b2"), ("package", "A", 4, b"a1")]
    expected = [("package", "A", 4, b"a1"), ("package", "B", 1, b"b1"),
                ("platform", "C", 1, b"c3")]
    assert _most_specific([rows]) == expected
    assert _most_specific([rows[:1], rows[1:4], [], rows[4:]]) == expected
    assert _most_specific([list(reversed(rows))]) == expected
    assert _most_specific([]) == []


@given(st.lists(st.tuples(st.sampled_from(SCOPES), st.text(min_size=1, max_size=8),
                          st.integers(1, 10**6)), unique_by=lambda r: (r[0], r[1])),
       st.integers(1, 5))
def test_winners_match_the_precedence_rule(triples: list[tuple[str, str, int]],
                                           batch: int) -> None:
    rows = [(scope, name, version, blob(scope)) for scope, name, version in triples]
    batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    winners = _most_specific(batches)
    assert [w[1] for w in winners] == sorted({r[1] for r in rows})
    for scope, name, _, _ in winners:
        assert min(SCOPES.index(r[0]) for r in rows if r[1] == name) == SCOPES.index(scope)
    entries = json.loads(_resolution_entries(winners))  # any name, escaped where it must be
    assert entries == [{"name": n, "scope": s, "version": v, "dataKeyId": KEYS[s]}
                       for s, n, v, _ in winners]


def test_plain_names_are_written_out_as_json_dumps_would() -> None:
    winners = [("project", "DB_PASS", 3, blob("project")),
               ("platform", "a.b-c_9", 12, blob("platform"))]
    assert _resolution_entries(winners) == json.dumps(
        [{"name": n, "scope": s, "version": v, "dataKeyId": KEYS[s]} for s, n, v, _ in winners],
        separators=(",", ":"))
    assert _resolution_entries([]) == "[]"
