"""Architecture rules as tests (STYLE.md "Rooms"): boundaries that a wiki page would not keep.

- services never import each other (they share only ``libs`` and ``contracts``);
- ``domain/`` packages import no framework, driver or I/O module;
- no service's SQL names another service's schema;
- ``os.environ`` is read only by ``libs/settings.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "intake", "policy", "approval", "renderer", "git_publisher", "cluster_bootstrapper")
SCHEMAS = tuple(s for s in SERVICES if s != "gateway")
# Launchers compose services; they are not services themselves.
COMPOSERS = ("platformd", "platformctl")

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
    "libs.database",
    "libs.bus",
    "libs.outbox",
    "libs.inbox",
    "libs.rpc",
    "libs.service_kit",
    "libs.service_runner",
    "libs.ops_server",
    "libs.embedded",
    "opentelemetry",
    "prometheus_client",
)


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def present_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name).is_dir()]


@pytest.mark.parametrize("service", present_services())
def test_services_do_not_import_each_other(service: str) -> None:
    offenders = []
    for path in python_files(ROOT / "services" / service):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


@pytest.mark.parametrize("service", present_services())
def test_domain_is_free_of_frameworks_and_io(service: str) -> None:
    domain = ROOT / "services" / service / "domain"
    offenders = []
    for path in python_files(domain) if domain.is_dir() else []:
        for module in imported_modules(path):
            if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN_IN_DOMAIN):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def sql_texts(service: str) -> list[tuple[Path, str]]:
    folder = ROOT / "services" / service
    texts = [(path, path.read_text(encoding="utf-8")) for path in sorted(folder.rglob("*.sql"))]
    sql_keywords = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|TRUNCATE|GRANT)\b")
    for path in python_files(folder):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and sql_keywords.search(node.value)
            ):
                texts.append((path, node.value))
    return texts


@pytest.mark.parametrize("service", present_services())
def test_no_service_sql_names_another_schema(service: str) -> None:
    others = [schema for schema in SCHEMAS if schema != service]
    pattern = re.compile(r"\b(" + "|".join(others) + r")\s*\.\s*[a-z_]", re.IGNORECASE)
    offenders = []
    for path, text in sql_texts(service):
        if pattern.search(text) or re.search(r"search_path", text, re.IGNORECASE):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_only_the_settings_module_reads_the_environment() -> None:
    offenders = []
    for folder in ("libs", "services", "contracts"):
        for path in python_files(ROOT / folder):
            if path == ROOT / "libs" / "settings.py":
                continue
            text = path.read_text(encoding="utf-8")
            if re.search(r"os\.environ|os\.getenv|getenv\(", text):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_schema_check_catches_a_cross_schema_query(tmp_path: Path) -> None:
    """The detector itself must fail on the thing it guards against."""
    others = [schema for schema in SCHEMAS if schema != "intake"]
    pattern = re.compile(r"\b(" + "|".join(others) + r")\s*\.\s*[a-z_]", re.IGNORECASE)
    assert pattern.search("SELECT * FROM policy.decisions")
    assert not pattern.search("SELECT * FROM requests WHERE class = %s")
