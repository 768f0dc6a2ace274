"""Detectors for the architecture rules, run by tests/unit/test_architecture.py on the real tree and
on small planted violations, so each detector is shown to fail on what it guards against.

Every detector takes the root of a tree laid out like this repository (``libs/``, ``contracts/``,
``services/<name>/``, ``services/tools/<tool>/``) and returns what breaks its rule, one readable
line per offence, empty when the rule holds.

The import graph is read with :mod:`ast`, never by importing the code: a rule must hold for a
module whether or not anything imports it. Relative imports are resolved to absolute module names,
and ``from package import name`` points at the submodule ``package.name`` when there is one. An
``importlib.import_module(...)`` or ``__import__(...)`` call counts as an import of the module its
string names, or, for an f-string, of the dotted prefix written out before the first placeholder
(``f"services.policy.{name}"`` imports from ``services.policy``).
"""

from __future__ import annotations

import ast
import functools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The top-level packages that make up the platform; everything else is a dependency.
PROJECT_PACKAGES = ("libs", "contracts", "services")
TOOLS_PACKAGE = "services.tools"
SETTINGS_MODULE = "libs.settings"

# What a layer may never import: the kit serves the services and the contracts serve everyone;
# nothing that ships imports the tests.
FORBIDDEN_LAYER_IMPORTS = {
    "libs": ("services", "tests"),
    "contracts": ("libs", "services", "tests"),
    "services": ("tests",),
}

# Frameworks, drivers and I/O that a pure domain must not reach, directly or through the kit.
FORBIDDEN_IN_DOMAIN = (
    "psycopg",
    "psycopg_pool",
    "nats",
    "litestar",
    "uvicorn",
    "httpx",
    "kubernetes",
    "git",
    "subprocess",
    "socket",
    "asyncio",
    "libs.database",
    "libs.bus",
    "libs.outbox",
    "libs.inbox",
    "libs.rpc",
    "libs.service_kit",
    "libs.service_runner",
    "libs.ops_server",
    "libs.embedded",
    "libs.telemetry",
    "opentelemetry",
    "prometheus_client",
)
# The rings around a service's domain; dependencies point inward, so the domain imports none.
OUTER_LAYERS = ("adapters", "service_layer", "entrypoints", "bootstrap", "settings")

ENVIRONMENT_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
# os re-exports the environment of the platform's own module (posix, or nt on Windows).
OS_MODULES = frozenset({"os", "posix", "nt"})
# Calls that import the module their first argument names.
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})
SQL_KEYWORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|TRUNCATE|GRANT|SET)\b")


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``importer`` needs ``imported`` (absolute, resolved)."""

    importer: str
    imported: str
    path: Path
    line: int

    def describe(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line} imports {self.imported}"


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def syntax_tree(path: Path) -> ast.Module:
    """``path`` parsed; each detector reads every file, so a file is parsed once per version."""
    return _parsed(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _parsed(path: Path, _version: int) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the platform by its absolute name (a package by its ``__init__.py``)."""
    return {
        module_name(root, path): path
        for package in PROJECT_PACKAGES
        if (root / package).is_dir()
        for path in python_files(root / package)
    }


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def services(root: Path) -> list[str]:
    """The services: the packages under ``services/`` that have a composition root."""
    return sorted(path.parent.name for path in (root / "services").glob("*/bootstrap.py"))


def owning_service(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "services" or within(module, TOOLS_PACKAGE):
        return None
    return parts[1]


def imports(root: Path) -> list[Import]:
    """Every import of every platform module, wherever it sits (see :func:`_import_nodes`)."""
    modules = project_modules(root)
    found: list[Import] = []
    for name, path in modules.items():
        tree = syntax_tree(path)
        for node in _import_nodes(tree):
            found.extend(
                Import(name, imported, path, node.lineno)
                for imported in _imported_modules(node, name, is_package(path), modules)
            )
        found.extend(Import(name, imported, path, line) for line, imported in _dynamic_imports(tree))
    return found


def _dynamic_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of every ``import_module``/``__import__`` call whose first argument names
    an absolute module: a string, or the dotted prefix an f-string starts with."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and _called_name(node.func) in DYNAMIC_IMPORTERS):
            continue
        named = node.args[0]
        if isinstance(named, ast.Constant) and isinstance(named.value, str):
            module = named.value
        elif isinstance(named, ast.JoinedStr) and named.values and isinstance(named.values[0], ast.Constant):
            # Only whole names before the first placeholder: f"services.pol{x}" says "services".
            module = str(named.values[0].value).rpartition(".")[0]
        else:
            continue
        if module and not module.startswith("."):
            yield node.lineno, module


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node``: module level, in functions and classes alike, but not
    under ``if TYPE_CHECKING:``, which never runs and exists for annotations only.

    A function-local import is a dependency like any other: it runs on the first call instead of
    at load time, which is exactly how a cycle is hidden rather than removed.
    """
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _import_nodes(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_modules(
    node: ast.Import | ast.ImportFrom, importer: str, importer_is_package: bool, modules: dict[str, Path]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _absolute_base(node, importer, importer_is_package)
    # `from package import name` loads the submodule package.name when there is one.
    return sorted(
        {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    )


def _absolute_base(node: ast.ImportFrom, importer: str, importer_is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def cross_service_imports(root: Path) -> list[str]:
    """A service importing another service, or any tool; tools may import services."""
    offenders = []
    for found in imports(root):
        service = owning_service(found.importer)
        if service is None:
            continue
        target = owning_service(found.imported)
        if within(found.imported, TOOLS_PACKAGE) or (target is not None and target != service):
            offenders.append(found.describe(root))
    return sorted(offenders)


def forbidden_layer_imports(root: Path) -> list[str]:
    """``libs`` importing ``services``, ``contracts`` importing ``libs`` or ``services``, or any
    of them importing ``tests``."""
    return sorted(
        found.describe(root)
        for found in imports(root)
        for layer, forbidden in FORBIDDEN_LAYER_IMPORTS.items()
        if within(found.importer, layer) and any(within(found.imported, bad) for bad in forbidden)
    )


def impure_domain_imports(root: Path) -> list[str]:
    """A ``domain/`` module importing a framework, a driver, I/O, or its own service's outer rings."""
    offenders = []
    for found in imports(root):
        service = owning_service(found.importer)
        if service is None or not within(found.importer, f"services.{service}.domain"):
            continue
        outer = [f"services.{service}.{layer}" for layer in OUTER_LAYERS]
        if any(within(found.imported, bad) for bad in (*FORBIDDEN_IN_DOMAIN, *outer)):
            offenders.append(found.describe(root))
    return sorted(offenders)


def import_cycles(root: Path) -> list[str]:
    """Every set of platform modules that import each other, named with one cycle through it."""
    graph = _internal_graph(root)
    return [
        f"{', '.join(sorted(group))} import each other, e.g. {' -> '.join(_shortest_cycle(graph, min(group)))}"
        for group in _strongly_connected(graph)
    ]


def _internal_graph(root: Path) -> dict[str, set[str]]:
    modules = project_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for found in imports(root):
        if found.imported in modules and found.imported != found.importer:
            graph[found.importer].add(found.imported)
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; only the groups of two modules or more (a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = _pop_group(stack, on_stack, node)
                    if len(group) > 1:
                        groups.append(group)
            elif successor not in index:
                index[successor] = low[successor] = len(index)
                stack.append(successor)
                on_stack.add(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
    return sorted(groups, key=min)


def _pop_group(stack: list[str], on_stack: set[str], root_node: str) -> set[str]:
    group: set[str] = set()
    while True:
        member = stack.pop()
        on_stack.discard(member)
        group.add(member)
        if member == root_node:
            return group


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest path from ``start`` back to itself (breadth first), for a readable message."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node]):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if successor not in came_from:
                came_from[successor] = node
                queue.append(successor)
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def cross_schema_sql(root: Path) -> list[str]:
    """A service's SQL (``.sql`` files and SQL string literals) naming another service's schema,
    or moving ``search_path`` so that an unqualified name could land in another schema."""
    names = services(root)
    offenders = []
    for service in names:
        others = [re.escape(name) for name in names if name != service]
        other_schema = re.compile(rf"\b({'|'.join(others)})\s*\.\s*[a-z_]", re.IGNORECASE)
        for path, text in _sql_texts(root / "services" / service):
            names_another = bool(others) and other_schema.search(text) is not None
            if names_another or re.search(r"search_path", text, re.IGNORECASE):
                offenders.append(str(path.relative_to(root)))
    return sorted(set(offenders))


def _sql_texts(folder: Path) -> list[tuple[Path, str]]:
    texts = [(path, path.read_text(encoding="utf-8")) for path in sorted(folder.rglob("*.sql"))]
    for path in python_files(folder):
        texts.extend(
            (path, node.value)
            for node in ast.walk(syntax_tree(path))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL_KEYWORDS.search(node.value)
        )
    return texts


def environment_reads(root: Path) -> list[str]:
    """Any module but the settings module touching the process environment through ``os``."""
    return sorted(
        f"{path.relative_to(root)}:{line}"
        for name, path in project_modules(root).items()
        if name != SETTINGS_MODULE
        for line in _environment_lines(syntax_tree(path))
    )


def _environment_lines(tree: ast.AST) -> list[int]:
    os_aliases = set(OS_MODULES) | {
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name in OS_MODULES and alias.asname
    }
    return sorted({node.lineno for node in ast.walk(tree) if _reads_environment(node, os_aliases)})


def _reads_environment(node: ast.AST, os_aliases: set[str]) -> bool:
    """``os.environ`` (any alias, ``posix``/``nt`` too), ``from os import environ`` or ``*``, and
    ``getattr(os, "environ")``."""
    if isinstance(node, ast.ImportFrom) and node.module in OS_MODULES:
        return any(alias.name in ENVIRONMENT_NAMES or alias.name == "*" for alias in node.names)
    if isinstance(node, ast.Attribute):
        return node.attr in ENVIRONMENT_NAMES and _names(node.value, os_aliases)
    if isinstance(node, ast.Call) and _called_name(node.func) == "getattr" and len(node.args) >= 2:
        target, attribute = node.args[0], node.args[1]
        return (
            _names(target, os_aliases)
            and isinstance(attribute, ast.Constant)
            and attribute.value in ENVIRONMENT_NAMES
        )
    return False


def _names(node: ast.expr, names: set[str]) -> bool:
    return isinstance(node, ast.Name) and node.id in names
