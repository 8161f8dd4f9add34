"""Which value of a name a package's run receives: the most specific scope wins.

Package scope shadows project scope, which shadows platform scope (:data:`scopes.PRECEDENCE`);
a scope rule (a pin to one scope, or the operator's policy) drops candidates first, so a pinned
name never falls back to another scope. Pure: the store fetches every current version in the
package's chain, shadowed ones too, and this picks the winners before any blob is decrypted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import itemgetter

from fx_operator.domain.scopes import PRECEDENCE

Candidate = tuple[str, str, int, bytes]
"""The current version of one name at one scope of a package's chain: (scope, name, version,
blob). A plain tuple, as the database driver returns it: a run reads a hundred per resolution."""

ScopeRule = Callable[[str, str], bool]
"""Whether a value at (scope, name) may be delivered: least privilege's pins and policy."""

_WIDEST_FIRST = tuple(scope.value for scope in reversed(PRECEDENCE))
_BY_NAME = itemgetter(1)


def most_specific(batches: Iterable[list[Candidate]],
                  allowed: ScopeRule | None = None) -> list[Candidate]:
    """Per name, the candidate of the most specific scope (package, then project, then
    platform) that ``allowed`` accepts, in name order. Candidates come in batches (as the
    store's rows arrive), each looked at once."""
    # Each scope's candidates by name, then merged widest first so that narrower ones replace
    # them (dict.update, in C): no rank compared per candidate. 20 -> 17 µs CPU per 100-name
    # resolution (201 candidates), 7 / 4 µs at p50 (bench_store's data, one process taking
    # turns with the rank compared, 2500 runs; durable / asynchronous audit).
    by_scope: dict[str, dict[str, Candidate]] = {scope: {} for scope in _WIDEST_FIRST}
    for candidates in batches:
        for candidate in candidates:
            if allowed is None or allowed(candidate[0], candidate[1]):
                by_scope[candidate[0]][candidate[1]] = candidate
    best: dict[str, Candidate] = {}
    for scope in _WIDEST_FIRST:
        best.update(by_scope[scope])
    return sorted(best.values(), key=_BY_NAME)
