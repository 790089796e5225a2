"""What a virtualenv holds (its distributions and their modules) and what the Switchyard
modules in it import, read from their source without running them."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import Distribution, distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: Exceptions whose handler makes the imports of a `try` optional.
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    dist: str  # canonical distribution name

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def _module_name(parts: tuple[str, ...]) -> str | None:
    """`a/b/c.py` → `a.b.c`, `a/b/__init__.py` → `a.b`, `a/_x.cpython-311-...so` → `a._x`."""
    *folders, file = parts
    if file.endswith(".py"):
        stem = file[:-3]
    elif file.endswith(".so"):
        stem = file.split(".", 1)[0]
    else:
        return None
    names = [*folders] if stem == "__init__" else [*folders, stem]
    if not names or not all(n.isidentifier() for n in names):
        return None
    return ".".join(names)


class Virtualenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        (self.site,) = root.glob("lib/python3*/site-packages")

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @cached_property
    def dists(self) -> dict[str, Distribution]:
        """Installed distributions by canonical name."""
        return {
            canonicalize_name(d.metadata["Name"]): d for d in distributions(path=[str(self.site)])
        }

    @cached_property
    def modules(self) -> dict[str, Module]:
        """Every importable module the distributions installed, by name."""
        found: dict[str, Module] = {}
        for name, dist in self.dists.items():
            for file in dist.files or ():
                if file.parts[0] == ".." or file.parts[0].endswith((".dist-info", ".data")):
                    continue  # scripts, metadata
                module = _module_name(file.parts)
                if module and "__pycache__" not in file.parts:
                    found[module] = Module(module, self.site / file, name)
        return found

    def provider(self, imported: str) -> Module | None:
        """The module an import statement's name lands in: the longest prefix installed
        (`from a.b import c` names `a.b.c`, which may be an attribute of `a.b`)."""
        parts = imported.split(".")
        while parts:
            module = self.modules.get(".".join(parts))
            if module:
                return module
            parts.pop()
        return None

    def is_namespace(self, name: str) -> bool:
        """A package without an `__init__` (`opentelemetry`): only its modules are files."""
        return any(other.startswith(name + ".") for other in self.modules)

    def requirements(self, dist: str, extras: Iterable[str] = ()) -> list[Requirement]:
        """`dist`'s requirements that apply here, with those of `extras`."""
        found = []
        for line in self.dists[dist].requires or ():
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *extras)):
                found.append(requirement)
        return found

    def closure(self, roots: Iterable[tuple[str, frozenset[str]]]) -> set[str]:
        """The distributions `roots` (names with extras) need, themselves included."""
        seen: set[tuple[str, frozenset[str]]] = set()
        todo = list(roots)
        while todo:
            dist, extras = todo.pop()
            if (dist, extras) in seen or dist not in self.dists:
                continue
            seen.add((dist, extras))
            todo.extend(
                (canonicalize_name(r.name), frozenset(r.extras))
                for r in self.requirements(dist, extras)
            )
        return {dist for dist, _ in seen}


class _Imports(ast.NodeVisitor):
    """The absolute names a module imports when it runs: not those under
    `if TYPE_CHECKING:` nor those a `try` makes optional."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        caught = {
            n.id
            for handler in node.handlers
            if handler.type is not None
            for n in ast.walk(handler.type)
            if isinstance(n, ast.Name)
        }
        if caught & _IMPORT_ERRORS:
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - node.level + 1]
            module = ".".join([*base, node.module] if node.module else base)
        else:
            module = node.module or ""
        self.names.add(module)
        self.names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")


def imports_of(module: Module) -> set[str]:
    visitor = _Imports(module.package)
    visitor.visit(ast.parse(module.path.read_text(), str(module.path)))
    return visitor.names


def is_stdlib(name: str) -> bool:
    return name.partition(".")[0] in sys.stdlib_module_names


@dataclass(frozen=True)
class ImportGraph:
    """What the modules of `start`'s distribution import, followed through the other
    installed modules they reach."""

    #: Every installed module reached, the start distribution's own included.
    reached: frozenset[str]
    #: Third-party imports that land in an installed module: (importing module, provider).
    third_party: frozenset[tuple[Module, Module]]
    #: Imports that land nowhere: (importing module, the name imported).
    unresolved: frozenset[tuple[str, str]]
    #: The standard library's top-level modules imported along the way.
    stdlib: frozenset[str] = frozenset()


def import_graph(venv: Virtualenv, start: str, follow: str = "switchyard") -> ImportGraph:
    """From every module of distribution `start`, follow imports into the modules under
    `follow` (a package's own, read here); third-party ones are recorded, not entered."""
    todo = [m for m in venv.modules.values() if m.dist == start]
    reached: set[str] = set()
    third_party: set[tuple[Module, Module]] = set()
    unresolved: set[tuple[str, str]] = set()
    stdlib: set[str] = set()
    while todo:
        module = todo.pop()
        if module.name in reached:
            continue
        reached.add(module.name)
        # Importing a module runs its packages' __init__ first.
        parents = module.name.split(".")[:-1]
        todo.extend(
            venv.modules[p]
            for p in (".".join(parents[: i + 1]) for i in range(len(parents)))
            if p in venv.modules
        )
        for name in imports_of(module):
            if is_stdlib(name):
                stdlib.add(name.partition(".")[0])
                continue
            provider = venv.provider(name)
            if provider is None:
                if not venv.is_namespace(name):
                    unresolved.add((module.name, name))
            elif provider.name.partition(".")[0] == follow:
                todo.append(provider)
            else:
                third_party.add((module, provider))
    return ImportGraph(
        frozenset(reached), frozenset(third_party), frozenset(unresolved), frozenset(stdlib)
    )
