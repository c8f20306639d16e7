"""Import direction and key-name ownership (DESIGN §1, STYLE points 1 and 5), read from the source with ``ast``.

The pipeline is producer -> collector -> archive -> consumer and imports only point
upstream: ``runstream`` (producer/) never imports ``runstream.collector``,
``runstream.archive`` or ``runstream.consumer`` at import time (a function body may
import the consumer or the archive lazily, as ``Run``'s reading and storage methods
do) and never imports aiohttp;
``runstream.collector`` imports the archive only inside a function (it runs the
archive's loop where the archive extra is installed) and never imports
``runstream.consumer``; ``runstream.archive`` never imports the consumer.  Redis key
names are built in producer/keys.py only.
"""

from __future__ import annotations

import ast
import enum
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCER = "runstream"
COLLECTOR = "runstream.collector"
CONSUMER = "runstream.consumer"
ARCHIVE = "runstream.archive"
KEYS_MODULE = "runstream.keys"
KEY_PREFIX = "rs:"


class Where(enum.Enum):
    """When an import statement runs."""

    MODULE = "at import time"
    TYPE_CHECKING = "only under TYPE_CHECKING"
    FUNCTION = "inside a function body"


@dataclass(frozen=True, slots=True)
class Module:
    """One source file and the dotted name it is installed under."""

    path: Path
    name: str

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    def parse(self) -> ast.Module:
        return ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))


@dataclass(frozen=True, slots=True)
class ImportSite:
    """A module that an import statement (or ``import_module``/``__import__`` call) may load."""

    target: str
    line: int
    where: Where


def package_dirs() -> dict[str, Path]:
    """Import package -> source folder, as pyproject's ``[tool.setuptools] package-dir`` maps them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in mapping.items()}


def modules_of(package: str) -> list[Module]:
    """Every .py file in ``package``'s folder, named as it is imported."""
    folder = package_dirs()[package]
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found.append(Module(path, ".".join(parts)))
    return found


def within(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def nodes_with_context(tree: ast.Module) -> Iterator[tuple[ast.AST, Where]]:
    """Every node of ``tree`` with when it runs: at import, only for the type checker, or when called."""
    stack: list[tuple[ast.AST, Where]] = [(tree, Where.MODULE)]
    while stack:
        node, where = stack.pop()
        yield node, where
        deferred: list[ast.AST] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            deferred = list(node.body)
        elif isinstance(node, ast.Lambda):
            deferred = [node.body]
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend((child, Where.TYPE_CHECKING if where is Where.MODULE else where) for child in node.body)
            stack.extend((child, where) for child in node.orelse)
            continue
        # Decorators, defaults and annotations of a def still run where the def is.
        stack.extend((child, Where.FUNCTION) for child in deferred)
        stack.extend((child, where) for child in ast.iter_child_nodes(node) if child not in deferred)


def resolve_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts.pop()
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: Module, tree: ast.Module | None = None) -> list[ImportSite]:
    """Everything ``module`` may import; ``from a import b`` counts as ``a`` and ``a.b`` (b may be a submodule)."""
    sites: list[ImportSite] = []
    for node, where in nodes_with_context(tree or module.parse()):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(module, node)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]
        elif isinstance(node, ast.Call) and is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                targets = [first.value]
        sites.extend(ImportSite(target, getattr(node, "lineno", 0), where) for target in targets)
    return sites


def is_dynamic_import(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in {"import_module", "__import__"}


def key_literals(tree: ast.Module) -> list[tuple[int, str]]:
    """Line and text of every str or bytes constant (f-string parts included) that starts like a key name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            text = node.value.decode(errors="replace") if isinstance(node.value, bytes) else node.value
            if text.startswith(KEY_PREFIX):
                found.append((node.lineno, text))
    return found


def violations(package: str, forbidden: str, allowed: frozenset[Where] = frozenset()) -> list[str]:
    """``path:line imports target (when)`` for each import of ``forbidden`` in ``package`` outside ``allowed``."""
    return [
        f"{module.path.relative_to(ROOT)}:{site.line} imports {site.target} {site.where.value}"
        for module in modules_of(package)
        for site in imports_of(module)
        if within(site.target, forbidden) and site.where not in allowed
    ]


def scan(source: str, name: str = "runstream.run", *, is_package: bool = False) -> set[tuple[str, Where]]:
    """The import targets of a snippet, as if it were module (or package) ``name``."""
    stem = name.replace(".", "/")
    module = Module(Path(f"{stem}/__init__.py" if is_package else f"{stem}.py"), name)
    return {(site.target, site.where) for site in imports_of(module, ast.parse(source))}


class TestSourceTree:
    """The walk finds every package pyproject maps, so an empty walk cannot pass the rules below."""

    def test_finds_the_mapped_packages(self) -> None:
        expected = {PRODUCER: "producer", COLLECTOR: "collector", CONSUMER: "consumer", ARCHIVE: "archive"}

        mapping = {package: folder.name for package, folder in package_dirs().items()}

        assert expected == mapping

    def test_finds_the_producer_modules(self) -> None:
        names = {module.name for module in modules_of(PRODUCER)}

        assert {PRODUCER, KEYS_MODULE, "runstream.run", "runstream.config"} <= names


class TestImportScanner:
    """The scanner sees absolute, relative and dynamic imports and knows when each one runs."""

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("import runstream.consumer", ("runstream.consumer", Where.MODULE)),
            ("from runstream.consumer.wait import wait", ("runstream.consumer.wait", Where.MODULE)),
            ("from runstream import consumer", ("runstream.consumer", Where.MODULE)),
            ("from . import consumer", ("runstream.consumer", Where.MODULE)),
            ("from .consumer import tail", ("runstream.consumer", Where.MODULE)),
            ("class A:\n    import aiohttp", ("aiohttp", Where.MODULE)),
            ("try:\n    import aiohttp\nexcept ImportError:\n    pass", ("aiohttp", Where.MODULE)),
            ("def f() -> None:\n    from runstream.consumer import x", ("runstream.consumer", Where.FUNCTION)),
            ("async def f() -> None:\n    import aiohttp.web", ("aiohttp.web", Where.FUNCTION)),
            ("if TYPE_CHECKING:\n    import aiohttp", ("aiohttp", Where.TYPE_CHECKING)),
            ("if typing.TYPE_CHECKING:\n    pass\nelse:\n    import aiohttp", ("aiohttp", Where.MODULE)),
            ("importlib.import_module('aiohttp')", ("aiohttp", Where.MODULE)),
            ("def f() -> None:\n    __import__('runstream.collector')", ("runstream.collector", Where.FUNCTION)),
            ("@decorate(__import__('aiohttp'))\ndef f() -> None:\n    pass", ("aiohttp", Where.MODULE)),
        ],
    )
    def test_sees_the_import(self, source: str, expected: tuple[str, Where]) -> None:
        found = scan(source)

        assert expected in found

    def test_resolves_relative_imports_in_a_package_init(self) -> None:
        found = scan("from . import records\nfrom .. import consumer", name="runstream.collector", is_package=True)

        assert {("runstream.collector.records", Where.MODULE), ("runstream.consumer", Where.MODULE)} <= found

    def test_finds_key_literals_in_strings_bytes_and_f_strings(self) -> None:
        tree = ast.parse('"""Keys like rs:x are documented here."""\nA = "rs:ws:exp"\nB = b"rs:x"\nC = f"rs:{ws}:d"\n')

        found = [line for line, _ in key_literals(tree)]

        assert [2, 3, 4] == sorted(found)


class TestImportDirection:
    """Imports only point upstream: producer <- collector <- archive <- consumer, and the SDK stays free of aiohttp."""

    def test_producer_does_not_import_the_collector(self) -> None:
        found = violations(PRODUCER, COLLECTOR, allowed=frozenset({Where.TYPE_CHECKING}))

        assert [] == found

    def test_producer_imports_the_consumer_only_inside_functions(self) -> None:
        found = violations(PRODUCER, CONSUMER, allowed=frozenset({Where.FUNCTION, Where.TYPE_CHECKING}))

        assert [] == found

    def test_producer_never_imports_aiohttp(self) -> None:
        found = violations(PRODUCER, "aiohttp")

        assert [] == found

    def test_collector_never_imports_the_consumer(self) -> None:
        found = violations(COLLECTOR, CONSUMER)

        assert [] == found

    def test_producer_imports_the_archive_only_inside_functions(self) -> None:
        found = violations(PRODUCER, ARCHIVE, allowed=frozenset({Where.FUNCTION, Where.TYPE_CHECKING}))

        assert [] == found

    def test_collector_imports_the_archive_only_inside_functions(self) -> None:
        found = violations(COLLECTOR, ARCHIVE, allowed=frozenset({Where.FUNCTION, Where.TYPE_CHECKING}))

        assert [] == found

    def test_archive_never_imports_the_consumer(self) -> None:
        found = violations(ARCHIVE, CONSUMER)

        assert [] == found

    def test_importing_runstream_loads_nothing_downstream(self, tmp_path: Path) -> None:
        downstream = (COLLECTOR, ARCHIVE, CONSUMER, "aiohttp")
        loaded = f"[name for name in sys.modules if name.startswith({downstream})]"
        probe = f"import json, sys, runstream\nprint(json.dumps({loaded}))"

        output = subprocess.run(
            [sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        ).stdout

        assert [] == json.loads(output)


class TestKeyNames:
    """Redis key names are spelt in producer/keys.py and nowhere else."""

    @pytest.mark.parametrize("package", [PRODUCER, COLLECTOR, ARCHIVE, CONSUMER])
    def test_no_key_literal_outside_keys_module(self, package: str) -> None:
        found = [
            f"{module.path.relative_to(ROOT)}:{line} {text!r}"
            for module in modules_of(package)
            if module.name != KEYS_MODULE
            for line, text in key_literals(module.parse())
        ]

        assert [] == found
