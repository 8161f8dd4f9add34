"""Paged listings, as kubectl pages: ``--limit``, ``--continue TOKEN``, ``--all``.

A page is fetched one row longer than asked, to know whether more follow without counting
them; where it ends is handed back as an opaque token (the last row's keyset key, never a
value), and a line on stderr says how to go on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
DEFAULT_PAGE = 1000  # a screenful many times over; --all for every one
Key = Sequence[str | int]


def paging_options(noun: str) -> Callable[[F], F]:
    """``--limit N``, ``--continue TOKEN`` and ``--all`` for a listing of ``noun``."""
    def decorate(command: F) -> F:
        command = click.option("--all", "list_all", is_flag=True,
                               help=f"Every one of the {noun}, however many (no --limit).")(
            command)
        command = click.option("--continue", "continue_token", metavar="TOKEN", default=None,
                               help="Go on where the previous page stopped (the token it "
                                    "printed).")(command)
        return click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_PAGE,
                            show_default=True,
                            help=f"Most {noun} to show; a line on stderr says how to see the "
                                 "next ones.")(command)
    return decorate


def fetch_size(limit: int, list_all: bool) -> int | None:
    """How many rows to ask the store for: one more than a page, to see whether more follow."""
    return None if list_all else limit + 1


def cut(rows: Sequence[T], limit: int, list_all: bool) -> tuple[Sequence[T], bool]:
    """The page to show of ``rows`` (fetched with ``fetch_size``), and whether more follow."""
    more = not list_all and len(rows) > limit
    return (rows[:limit] if more else rows), more


def token(key: Key) -> str:
    """Where a page ended, as an opaque word for --continue (names and ids, never a value)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def token_key(text: str, shape: Sequence[type], command: str) -> list[Any]:
    """The key in a token ``command`` printed, its parts of the types in ``shape``."""
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        key = None
    if not (isinstance(key, list) and len(key) == len(shape) and all(
            type(part) is kind for part, kind in zip(key, shape, strict=True))):
        raise click.BadParameter(f"not a token printed by {command}", param_hint="--continue")
    return key


def say_more(noun: str, command: str, key: Key) -> None:
    """The stderr line after a page that is not the last."""
    click.echo(f"more {noun}: {command} --continue {token(key)} (with the same options), or "
               "--all", err=True)
