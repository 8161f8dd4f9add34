"""Which secret names a package's scripts read, found statically (Python ``ast``, never run).

Least privilege needs the names a run will ask for before it runs. The finder collects the
literal names read through every spelling the runtime offers::

    from fx_ef import context            # or: from ferris_ef import context
    context.secrets.get("DB_PASS")
    secrets = context.secrets; secrets.get("DB_PASS")
    from fx_ef import get_secret         # or ferris_ef's, or fx_ef.get_secret(...)
    get_secret("DB_PASS")
    import fx_ef as fx; fx.context.secrets.get(name="DB_PASS")

A read whose name is not a string literal (``get_secret(name)``, an f-string) cannot be known
before the run: it is reported as *dynamic*, with its place, so that the package declares the
names it needs or opts into all of them. The finder is conservative in the other direction too:
a name bound to the runtime is tracked across the whole file, whatever the scope, so shadowing
a runtime name with something else can only add names (more delivered), never hide a read.

It never raises on a tenant's file: syntax errors, null bytes, undecodable text and nesting too
deep for the compiler become a ``problems`` entry naming the file.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field

RUNTIME_MODULES = frozenset({"fx_ef", "ferris_ef"})
_CONTEXT = "context"
_GET_SECRET = "get_secret"  # noqa: S105 - a function name, not a password


@dataclass(frozen=True)
class Place:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Findings:
    """What the scripts read: literal names (with where), dynamic reads, unreadable files."""

    names: Mapping[str, tuple[Place, ...]] = field(default_factory=dict)
    dynamic: tuple[Place, ...] = ()
    problems: tuple[str, ...] = ()

    def merged(self, other: Findings) -> Findings:
        names = {n: tuple(p) for n, p in self.names.items()}
        for name, places in other.names.items():
            names[name] = names.get(name, ()) + tuple(places)
        return Findings(dict(sorted(names.items())), self.dynamic + other.dynamic,
                        self.problems + other.problems)


class _Bindings:
    """Local names bound to the runtime: modules, the context, its secrets, get_secret."""

    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.contexts: set[str] = set()
        self.secrets: set[str] = set()
        self.getters: set[str] = set()

    def learn_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in RUNTIME_MODULES:
                    self.modules.add(alias.asname or alias.name)
            return
        if node.module not in RUNTIME_MODULES or node.level:
            return
        for alias in node.names:
            bound = alias.asname or alias.name
            if alias.name == _CONTEXT:
                self.contexts.add(bound)
            elif alias.name == _GET_SECRET:
                self.getters.add(bound)

    def is_context(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.contexts
        return (isinstance(node, ast.Attribute) and node.attr == _CONTEXT
                and isinstance(node.value, ast.Name) and node.value.id in self.modules)

    def is_secrets(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.secrets
        return (isinstance(node, ast.Attribute) and node.attr == "secrets"
                and self.is_context(node.value))

    def is_getter(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.getters
        return (isinstance(node, ast.Attribute) and node.attr == _GET_SECRET
                and ((isinstance(node.value, ast.Name) and node.value.id in self.modules)
                     or self.is_context(node.value)))

    def learn_assignment(self, node: ast.Assign | ast.AnnAssign) -> bool:
        """``s = context.secrets`` or ``ctx = fx_ef.context``: True when a binding was learnt."""
        value = node.value
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if value is None or not names:
            return False
        for kind, test in ((self.secrets, self.is_secrets), (self.contexts, self.is_context),
                           (self.getters, self.is_getter)):
            if test(value) and not set(names) <= kind:
                kind.update(names)
                return True
        return False


def _read_name(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def find_in_source(text: str | bytes, file: str) -> Findings:
    """The secret reads in one Python file."""
    try:
        tree = ast.parse(text, filename=file)
    except SyntaxError as e:
        return Findings(problems=(f"{file}:{e.lineno or 0}: not valid Python ({e.msg}); "
                                  "its secret reads cannot be found",))
    except (ValueError, UnicodeDecodeError) as e:  # null bytes, undecodable source
        return Findings(problems=(f"{file}: not readable as Python source ({e})",))
    except (RecursionError, MemoryError):
        return Findings(problems=(f"{file}: nested too deeply for Python's own compiler",))
    nodes = list(ast.walk(tree))  # breadth-first and iterative: no recursion on deep files
    bindings = _Bindings()
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bindings.learn_import(node)
    # Aliases of aliases (``c = context; s = c.secrets``) settle in a few passes.
    assignments = [n for n in nodes if isinstance(n, ast.Assign | ast.AnnAssign)]
    while any([bindings.learn_assignment(a) for a in assignments]):
        pass
    names: dict[str, tuple[Place, ...]] = {}
    dynamic: list[Place] = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_read = (bindings.is_getter(func)
                   or (isinstance(func, ast.Attribute) and func.attr == "get"
                   and bindings.is_secrets(func.value)))
        if not is_read:
            continue
        place = Place(file, node.lineno)
        argument = _read_name(node)
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names[argument.value] = (*names.get(argument.value, ()), place)
        else:
            dynamic.append(place)
    return Findings(dict(sorted(names.items())), tuple(sorted(dynamic, key=str)))


def find_in_sources(sources: Mapping[str, str | bytes]) -> Findings:
    """The secret reads in every file of a package, by file name."""
    found = Findings()
    for file in sorted(sources):
        found = found.merged(find_in_source(sources[file], file))
    return found
