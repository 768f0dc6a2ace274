"""Architecture rules as tests (STYLE.md "Rooms"): boundaries that a wiki page would not keep.

What the boundary test enforces, over every module of ``libs/``, ``contracts/`` and ``services/``
(the tools under ``services/tools/`` included):

- services never import each other, nor any tool; the tools (platformd, platformctl) compose the
  services and may import them;
- ``libs`` never imports ``services``; ``contracts`` imports neither ``libs`` nor ``services``;
  none of them imports ``tests``;
- ``domain/`` packages import no framework, driver or I/O module, and none of their own service's
  outer rings (adapters, service layer, entrypoints, bootstrap, settings);
- no service's SQL names another service's schema;
- only ``libs/settings.py`` reads the process environment;
- no import cycles: no two platform modules import each other, directly or through others.

Imports are read from the source (``tests/support/architecture.py``), relative ones resolved to
absolute names and ``from package import module`` counted as an import of the submodule. An import
under ``if TYPE_CHECKING:`` never runs and is left out. An import inside a function counts like
one at the top of the module: it still makes the module depend on the other one, it only runs
later, so a function-local import that closes a loop is a cycle moved out of sight, not removed.
``importlib.import_module`` and ``__import__`` with a string (or an f-string's written-out dotted
prefix) are imports too. The environment is read through ``os``, ``posix`` or ``nt``, by attribute,
``from ... import`` (``*`` included) or ``getattr``.

The services are discovered, not listed: the packages under ``services/`` with a ``bootstrap.py``,
held to the deployables ``services/tools/topology.py`` derives. Each detector runs on the real tree
and on a small planted violation, so it is shown able to fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.tools.topology import deployables
from tests.support import architecture

ROOT = Path(__file__).resolve().parents[2]


def plant(root: Path, files: dict[str, str]) -> Path:
    """A tree laid out like this repository, holding ``files`` (path -> source)."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root


TWO_SERVICES = {
    "services/intake/bootstrap.py": "",
    "services/intake/domain/rules.py": "",
    "services/policy/bootstrap.py": "",
    "services/policy/domain/rules.py": "",
}


def test_the_detectors_see_every_service_and_tool() -> None:
    """A rule checked over nothing passes; the real tree must show up in the import graph."""
    modules = architecture.project_modules(ROOT)
    packages = {".".join(name.split(".")[:2]) for name in modules}
    assert len(architecture.services(ROOT)) > 1
    assert {f"services.{service}" for service in architecture.services(ROOT)} <= packages
    assert {"libs.settings", "contracts.events", "services.tools.platformd.main"} <= set(modules)
    assert {"services.tools.platformctl.main", "services.tools.platformd.main"} <= {
        found.importer for found in architecture.imports(ROOT)
    }


def test_the_services_checked_are_the_deployables_the_topology_derives() -> None:
    """The detectors read files, so they find services by the same rule the topology applies to
    the imported packages; this holds the two to one answer."""
    assert architecture.services(ROOT) == sorted(deployables())


def test_services_do_not_import_each_other_nor_tools() -> None:
    assert architecture.cross_service_imports(ROOT) == []


def test_libs_and_contracts_do_not_import_outward() -> None:
    assert architecture.forbidden_layer_imports(ROOT) == []


def test_domain_is_free_of_frameworks_io_and_outer_rings() -> None:
    assert architecture.impure_domain_imports(ROOT) == []


def test_no_import_cycles() -> None:
    assert architecture.import_cycles(ROOT) == []


def test_no_service_sql_names_another_schema() -> None:
    assert architecture.cross_schema_sql(ROOT) == []


def test_only_the_settings_module_reads_the_environment() -> None:
    assert architecture.environment_reads(ROOT) == []


def test_a_service_importing_another_service_or_a_tool_is_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "services/intake/adapters/relative.py": "from ...policy.domain import rules\n",
            "services/intake/adapters/absolute.py": "import services.policy.domain.rules\n",
            "services/intake/entrypoints/cli.py": "from services.tools.platformctl import main\n",
            "services/intake/service_layer/own.py": "from ..domain import rules\n",
            "services/tools/platformctl/main.py": "from services.intake.domain import rules\n",
        },
    )
    assert architecture.cross_service_imports(root) == [
        "services/intake/adapters/absolute.py:1 imports services.policy.domain.rules",
        "services/intake/adapters/relative.py:1 imports services.policy.domain.rules",
        "services/intake/entrypoints/cli.py:1 imports services.tools.platformctl.main",
    ]


def test_dynamic_imports_of_another_service_are_caught_in_services_and_libs(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "services/intake/adapters/plugins.py": (
                "import importlib\n"
                "from importlib import import_module\n"
                "RULES = importlib.import_module('services.policy.domain.rules')\n"
                "def load(name):\n"
                "    return __import__(f'services.policy.{name}')\n"
                "OWN = import_module('services.intake.domain.rules')\n"
                "ANY = import_module(f'services.{RULES}.bootstrap')\n"
            ),
            "libs/runner.py": "import importlib\n\ndef start(name):\n    importlib.import_module(f'services.{name}.bootstrap')\n",
            "services/tools/platformd/main.py": "import importlib\nimportlib.import_module('services.policy.bootstrap')\n",
        },
    )
    assert architecture.cross_service_imports(root) == [
        "services/intake/adapters/plugins.py:3 imports services.policy.domain.rules",
        "services/intake/adapters/plugins.py:5 imports services.policy",
    ]
    assert architecture.forbidden_layer_imports(root) == ["libs/runner.py:4 imports services"]


def test_shipped_code_importing_the_tests_is_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "libs/bus.py": "import tests.support.bus\n",
            "contracts/events.py": "from tests.support import seed_plans\n",
            "services/intake/adapters/fake.py": "def fake():\n    from tests.support.bus import wait_until\n",
            "services/tools/platformd/dev.py": "import importlib\nimportlib.import_module('tests.support.stack')\n",
        },
    )
    assert architecture.forbidden_layer_imports(root) == [
        "contracts/events.py:1 imports tests.support",
        "libs/bus.py:1 imports tests.support.bus",
        "services/intake/adapters/fake.py:2 imports tests.support.bus",
        "services/tools/platformd/dev.py:2 imports tests.support.stack",
    ]


def test_libs_importing_services_and_contracts_importing_libs_are_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "libs/bus.py": "from services.intake import bootstrap\n",
            "libs/outbox.py": "from libs import bus\nfrom contracts import events\n",
            "contracts/events.py": "from libs import bus\n",
            "contracts/rpc.py": "import services.policy.domain.rules\nfrom . import events\n",
        },
    )
    assert architecture.forbidden_layer_imports(root) == [
        "contracts/events.py:1 imports libs.bus",
        "contracts/rpc.py:1 imports services.policy.domain.rules",
        "libs/bus.py:1 imports services.intake.bootstrap",
    ]


def test_a_domain_importing_a_driver_or_its_outer_rings_is_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "services/intake/adapters/repository.py": "import psycopg\n",
            "services/intake/domain/rules.py": (
                "import psycopg.rows\n"
                "from libs.database import connect\n"
                "from ..adapters import repository\n"
                "from contracts import events\n"
                "from . import limits\n"
            ),
            "services/intake/domain/limits.py": "def later():\n    import asyncio\n",
        },
    )
    assert architecture.impure_domain_imports(root) == [
        "services/intake/domain/limits.py:2 imports asyncio",
        "services/intake/domain/rules.py:1 imports psycopg.rows",
        "services/intake/domain/rules.py:2 imports libs.database",
        "services/intake/domain/rules.py:3 imports services.intake.adapters.repository",
    ]


def test_cycles_through_relative_and_function_local_imports_are_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "libs/outbox.py": "from libs import relay\n",
            "libs/relay.py": "def publish():\n    from . import outbox\n",
            "services/tools/platformctl/commands.py": "from .catalog_commands import show\n",
            "services/tools/platformctl/catalog_commands.py": "from . import output\n",
            "services/tools/platformctl/output.py": "from services.tools.platformctl import commands\n",
        },
    )
    assert architecture.import_cycles(root) == [
        "libs.outbox, libs.relay import each other, e.g. libs.outbox -> libs.relay -> libs.outbox",
        "services.tools.platformctl.catalog_commands, services.tools.platformctl.commands,"
        " services.tools.platformctl.output import each other, e.g."
        " services.tools.platformctl.catalog_commands -> services.tools.platformctl.output"
        " -> services.tools.platformctl.commands -> services.tools.platformctl.catalog_commands",
    ]


def test_an_import_for_annotations_only_is_not_a_cycle(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "libs/outbox.py": "from libs import relay\n",
            "libs/relay.py": (
                "import typing\n"
                "if typing.TYPE_CHECKING:\n"
                "    from libs.outbox import Outbox\n"
                "else:\n"
                "    Outbox = object\n"
            ),
        },
    )
    assert architecture.import_cycles(root) == []


@pytest.mark.parametrize(
    ("path", "sql"),
    [
        ("services/intake/adapters/repository.py", 'QUERY = "SELECT * FROM policy.decisions"\n'),
        ("services/intake/adapters/repository.py", 'QUERY = "SET search_path TO policy"\n'),
        ("services/intake/migrations/0002_copy.sql", "INSERT INTO requests SELECT * FROM Policy . rules;\n"),
    ],
)
def test_sql_naming_another_schema_is_caught(tmp_path: Path, path: str, sql: str) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "services/intake/adapters/own.py": 'QUERY = "SELECT * FROM requests WHERE class = %s"\n',
            path: sql,
        },
    )
    assert architecture.cross_schema_sql(root) == [path]


def test_reading_the_environment_outside_settings_is_caught(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **TWO_SERVICES,
            "libs/settings.py": "import os\nTOKEN = os.environ.get('TOKEN')\n",
            "libs/bus.py": "import os as system\n\nURL = system.getenv('URL')\n",
            "services/intake/settings.py": "from os import environ\n",
            "services/tools/platformd/main.py": "import os\n\ndef spawn():\n    return dict(os.environ)\n",
            "contracts/events.py": "ENVIRONMENT = 'os.environ is read by settings only'\n",
            "libs/rpc.py": "import os\nTIMEOUT = getattr(os, 'environ')['TIMEOUT']\nSEP = getattr(os, 'sep')\n",
            "libs/outbox.py": "from os import *\n",
            "libs/inbox.py": "import posix\nHOME = posix.environ[b'HOME']\n",
            "libs/health.py": "from nt import getenv\n",
        },
    )
    assert architecture.environment_reads(root) == [
        "libs/bus.py:3",
        "libs/health.py:1",
        "libs/inbox.py:2",
        "libs/outbox.py:1",
        "libs/rpc.py:2",
        "services/intake/settings.py:1",
        "services/tools/platformd/main.py:4",
    ]
