"""How much ``context.state`` a package may keep: the limits, defined once for every channel.

A run's state writes are a tenant's input, held in the operator's memory while they are read,
encrypted and answered (the whole state is decrypted for a ``get``). Without limits one run put
80 values of 900 KB and took the operator from 140 MiB past its chart's 512 Mi. The limits:

* a key: 1 to :data:`MAX_KEY_BYTES` bytes of UTF-8;
* a value: at most :data:`MAX_VALUE_BYTES` bytes as compact JSON (``crypto.encode_value``: what
  is encrypted, stored and returned);
* a package's state: at most :data:`MAX_KEYS` keys and :data:`MAX_TOTAL_BYTES` bytes in all
  (keys plus values), so a ``get`` answers at most about that much.

The request parser (``channel_requests``) checks a key and a value before anything reaches the
store; the state service checks the package's totals in the transaction that writes, where the
package's writers take turns. A write that leaves an over-limit state (kept from before the
limits) no larger than it was is allowed, so such a package can shrink back under the limit.

A value or a state too large is a :class:`StateLimitError` (HTTP 413); a key too long is a plain
``ValidationError`` (400). Every message names the key and the limit, never the value.
"""

from __future__ import annotations

from typing import Final

from fx_operator.exceptions import Problem, ValidationError

MAX_KEY_BYTES: Final = 256
MAX_VALUE_BYTES: Final = 128 * 1024
MAX_TOTAL_BYTES: Final = 1024 * 1024
MAX_KEYS: Final = 1000

SOURCE: Final = "state write"
_SHOWN_KEY_CHARS = 64


class StateLimitError(ValidationError):
    """A state write that would exceed a size limit; the channel answers it with 413."""

    http_status = 413


def shown_key(key: str) -> str:
    """The key as a message shows it: quoted, and shortened when it is long."""
    if len(key) <= _SHOWN_KEY_CHARS:
        return repr(key)
    return repr(key[:_SHOWN_KEY_CHARS]) + f"... ({len(key)} characters)"


def key_problem(key: str) -> str | None:
    """What is wrong with a key's length, or None."""
    if not key:
        return "must not be empty"
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        return (f"{shown_key(key)} is {size} bytes long; a state key is at most "
                f"{MAX_KEY_BYTES} bytes (UTF-8)")
    return None


def check_key(key: str) -> None:
    """``ValidationError`` naming the key when its length is outside the limit."""
    problem = key_problem(key)
    if problem is not None:
        raise ValidationError(Problem("key", problem), source=SOURCE)


def check_value(key: str, size: int) -> None:
    """``StateLimitError`` when a value of ``size`` serialized bytes is too large for a key."""
    if size > MAX_VALUE_BYTES:
        raise StateLimitError(Problem("value", f"of key {shown_key(key)} is {size} bytes as JSON, "
                                      f"more than the limit of {MAX_VALUE_BYTES} bytes per value"),
                              source=SOURCE)


def entry_bytes(key: str, value_bytes: int) -> int:
    """What one key counts towards the package's total: its key's and its value's bytes."""
    return len(key.encode()) + value_bytes


def check_package(key: str, sizes: dict[str, int], new_size: int) -> None:
    """``StateLimitError`` when writing ``key`` (``new_size`` as counted by ``entry_bytes``) over
    the package's current ``sizes`` (key -> counted bytes) breaks the package's limits."""
    if key not in sizes and len(sizes) >= MAX_KEYS:
        raise StateLimitError(Problem("key", f"{shown_key(key)} would be key number "
                                      f"{len(sizes) + 1} of the package's state; the limit is "
                                      f"{MAX_KEYS} keys"), source=SOURCE)
    total = sum(sizes.values())
    after = total - sizes.get(key, 0) + new_size
    if after > MAX_TOTAL_BYTES and after > total:
        raise StateLimitError(Problem("value", f"of key {shown_key(key)} would make the package's "
                                      f"state {after} bytes, more than the limit of "
                                      f"{MAX_TOTAL_BYTES} bytes per package"), source=SOURCE)
