"""The static finder of secret reads: every spelling found, dynamic reads reported, no crash."""

from __future__ import annotations

import keyword

from fx_operator.domain.secret_finder import Place, find_in_source, find_in_sources
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.processes import REPO

NAMES = st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)
IDENTIFIERS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s not in {"context", "get_secret", "fx_ef",
                                                     "ferris_ef", "json", "print"})

# (import lines, how to read NAME) for every spelling the runtime offers; {a} is an alias.
SPELLINGS = [
    ("from fx_ef import context", "context.secrets.get({n})"),
    ("from ferris_ef import context", "context.secrets.get({n})"),
    ("from fx_ef import context as {a}", "{a}.secrets.get({n})"),
    ("from fx_ef import context\n{a} = context.secrets", "{a}.get({n})"),
    ("from fx_ef import get_secret", "get_secret({n})"),
    ("from ferris_ef import get_secret as {a}", "{a}({n})"),
    ("import fx_ef", "fx_ef.context.secrets.get({n})"),
    ("import ferris_ef as {a}", "{a}.get_secret({n})"),
    ("import fx_ef as {a}\nctx = {a}.context\n{a}_s = ctx.secrets", "{a}_s.get(name={n})"),
]


def test_the_seeds_scripts_read_exactly_db_name_and_db_pass() -> None:
    for folder in ("secrets-fx-ef", "secrets-ferris"):
        script = REPO / "examples" / folder / "test_secrets.py"
        found = find_in_source(script.read_text(), script.name)
        assert sorted(found.names) == ["DB_NAME", "DB_PASS"], folder
        assert found.dynamic == () and found.problems == ()


def test_reads_of_unrelated_objects_are_not_secrets() -> None:
    found = find_in_source(
        "import os\nfrom mylib import context, get_secret\nd = {}\n"
        "d.get('A'); context.secrets.get('B'); get_secret('C'); os.environ.get('D')\n"
        "from fx_ef import context as fx\nfx.params.get('E'); fx.secrets.set('F', 1)\n", "x.py")
    assert dict(found.names) == {} and found.dynamic == ()


def test_dynamic_reads_are_reported_with_their_place() -> None:
    found = find_in_source(
        "from fx_ef import context, get_secret\n"
        "name = 'A'\n"
        "context.secrets.get(name)\n"
        "get_secret(f'DB_{name}')\n"
        "context.secrets.get('LITERAL')\n", "main.py")
    assert dict(found.names) == {"LITERAL": (Place("main.py", 5),)}
    assert [str(p) for p in found.dynamic] == ["main.py:3", "main.py:4"]


def test_files_are_merged_with_every_place() -> None:
    found = find_in_sources({"b.py": "from fx_ef import get_secret\nget_secret('A')\n",
                             "a.py": "from fx_ef import get_secret\n\nget_secret('A')\n",
                             "bad.py": "def (:\n"})
    assert dict(found.names) == {"A": (Place("a.py", 3), Place("b.py", 2))}
    assert len(found.problems) == 1 and found.problems[0].startswith("bad.py:1: not valid Python")


@st.composite
def scripts(draw: st.DrawFn) -> tuple[str, set[str], int]:
    """A script of random reads in random spellings; with the names and dynamic count expected."""
    lines: list[str] = []
    expected: set[str] = set()
    dynamic = 0
    for _ in range(draw(st.integers(1, 6))):
        imports, read = draw(st.sampled_from(SPELLINGS))
        alias = draw(IDENTIFIERS)
        lines.extend(imports.format(a=alias).splitlines())
        if draw(st.booleans()):
            name = draw(NAMES)
            expected.add(name)
            argument = repr(name)
        else:
            dynamic += 1
            argument = draw(st.sampled_from(["variable", "f'X_{variable}'", "'A' + variable"]))
        call = read.format(a=alias, n=argument)
        lines.append(draw(st.sampled_from([
            "{}", "print({})", "def f(variable):\n    return {}",
            "if variable:\n    value = {}", "class C:\n    x = [{}]"])).format(call))
    return "variable = 'V'\n" + "\n".join(lines) + "\n", expected, dynamic


@given(scripts())
@settings(max_examples=300, deadline=None)
def test_every_literal_read_is_found_and_every_dynamic_read_reported(
        script: tuple[str, set[str], int]) -> None:
    source, expected, dynamic = script
    found = find_in_source(source, "main.py")
    assert set(found.names) == expected, source
    assert len(found.dynamic) == dynamic, source
    assert found.problems == ()


@given(st.one_of(st.text(), st.binary()))
@settings(max_examples=300, deadline=None)
@example("(" * 100_000)
@example("x = " + "[" * 5_000 + "]" * 5_000)
@example("1" + "+1" * 200_000)
@example(b"print('a')\x00")
@example(b"\xff\xfe\x00bad")
@example("# -*- coding: nope -*-\n")
def test_no_file_makes_it_raise(source: str | bytes) -> None:
    found = find_in_source(source, "any.py")
    assert all(problem.startswith("any.py") for problem in found.problems)
