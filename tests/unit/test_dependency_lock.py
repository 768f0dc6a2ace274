"""The dependency lock: complete, pinned with hashes, and what every install path reads.

`make lock` writes requirements/dev.txt (runtime, dev extra and build tools: what
`make install` and CI install), requirements/runtime.txt (what the image installs) and
requirements/build.txt (what builds the image's wheel) from pyproject.toml and
requirements/build.in. These tests check what someone relying on them would notice: a
declared dependency missing, unpinned or out of its declared range, a test tool in the
image, a virtualenv that drifted from the lock, or an install step that resolves versions
itself instead of reading the lock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = ("dev.txt", "runtime.txt", "build.txt")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")
PIP_INSTALL = re.compile(r"\bpip\b( --python \S+)? install\b")

# Environments the universal lock must serve alike; sys_platform and platform_machine are
# what pyproject.toml's markers (helm-python-sdk's) look at.
PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    "macos-x86_64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "x86_64"},
    "windows-amd64": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
}


@dataclass(frozen=True)
class Entry:
    """One requirement line of a lock file, continuation lines joined."""

    name: str
    version: str | None  # the `==` version; None when the line is not an exact pin
    marker: Marker | None
    hashes: int
    text: str

    def applies(self, environment: dict[str, str] | None = None) -> bool:
        return self.marker is None or self.marker.evaluate(environment)


def read_lock(name: str) -> dict[str, list[Entry]]:
    """A lock file's entries by canonical package name (a universal lock may fork a package
    into several versions, one per marker)."""
    entries: dict[str, list[Entry]] = {}
    joined = (REQUIREMENTS / name).read_text().replace("\\\n", " ")
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{name}: an option line where a pin belongs: {line}"
        requirement = Requirement(line.split(" --hash=", 1)[0])
        pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        version = pins[0] if len(pins) == 1 and len(requirement.specifier) == 1 else None
        entry = Entry(
            canonicalize_name(requirement.name), version, requirement.marker, len(HASH.findall(line)), line
        )
        entries.setdefault(entry.name, []).append(entry)
    return entries


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, list[Entry]]]:
    return {name: read_lock(name) for name in LOCKS}


def build_in() -> list[str]:
    lines = (REQUIREMENTS / "build.in").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def declared() -> list[tuple[str, str]]:
    """(lock file, requirement) for everything the project declares, in each lock that must hold it."""
    runtime = PYPROJECT["project"]["dependencies"]
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    build = PYPROJECT["build-system"]["requires"] + build_in()
    return (
        [(lock, item) for item in runtime for lock in ("runtime.txt", "dev.txt")]
        + [("dev.txt", item) for item in dev]
        + [(lock, item) for item in build for lock in ("dev.txt", "build.txt")]
    )


def make(*arguments: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    done = subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def pip_installs(commands: str) -> list[str]:
    """The `pip install` commands (`pip --python ... install` too) in a list of shell commands
    (lines, `&&` chains)."""
    found = []
    for line in commands.replace("\\\n", " ").splitlines():
        found += [part.strip() for part in line.split("&&") if PIP_INSTALL.search(part)]
    return found


@pytest.mark.parametrize("name", LOCKS)
def test_lock_file_header_says_how_it_was_made(name: str) -> None:
    head = (REQUIREMENTS / name).read_text().splitlines()[:2]
    assert head == ["# This file was autogenerated by uv via the following command:", "#    make lock"]


@pytest.mark.parametrize(
    ("lock", "requirement"), declared(), ids=[f"{lock}:{item.split(';')[0]}" for lock, item in declared()]
)
def test_declared_dependency_is_pinned_with_hashes(
    locks: dict[str, dict[str, list[Entry]]], lock: str, requirement: str
) -> None:
    wanted = Requirement(requirement)
    entries = locks[lock].get(canonicalize_name(wanted.name), [])
    assert entries, f"{wanted.name} is declared but not in requirements/{lock}: run make lock"
    for entry in entries:
        assert entry.version is not None, f"not pinned with ==: {entry.text}"
        assert entry.hashes >= 1, f"no --hash=sha256: {entry.text}"
        assert wanted.specifier.contains(entry.version, prereleases=True), (
            f"{entry.name}=={entry.version} is outside pyproject's {wanted.specifier}: run make lock"
        )
    for platform, values in PLATFORMS.items():
        environment = default_environment() | values
        wanted_here = wanted.marker is None or wanted.marker.evaluate(environment)
        locked_here = any(entry.applies(environment) for entry in entries)
        assert locked_here == wanted_here, f"on {platform} the lock disagrees with {requirement!r}"


def test_runtime_lock_has_no_dev_only_package(locks: dict[str, dict[str, list[Entry]]]) -> None:
    runtime_declared = {
        canonicalize_name(Requirement(item).name) for item in PYPROJECT["project"]["dependencies"]
    }
    dev_only = {
        canonicalize_name(Requirement(item).name)
        for item in PYPROJECT["project"]["optional-dependencies"]["dev"]
    } - runtime_declared
    assert {"pytest", "ruff", "mypy", "uv"} <= dev_only
    # A package the tests import may also be what a runtime dependency needs (packaging for
    # kubernetes-validate): it belongs in the image only when the lock says a runtime package
    # pulls it in.
    pulled_in = required_by_runtime_packages()
    assert "packaging" in pulled_in
    assert sorted((dev_only & set(locks["runtime.txt"])) - pulled_in) == []


def required_by_runtime_packages() -> set[str]:
    """Packages of runtime.txt whose `# via` lines name a package (not only the constraint file)."""
    pulled: set[str] = set()
    current: str | None = None
    for line in (REQUIREMENTS / "runtime.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            current = canonicalize_name(Requirement(line.split(" ", 1)[0].rstrip("\\")).name)
            continue
        via = line.strip().removeprefix("#").strip().removeprefix("via").strip()
        if current and via and not via.startswith(("-c ", "-r ", "--hash")):
            pulled.add(current)
    return pulled


def test_image_runs_the_versions_the_tests_ran_against(locks: dict[str, dict[str, list[Entry]]]) -> None:
    runtime, dev = locks["runtime.txt"], locks["dev.txt"]
    assert len(runtime) > 20
    differing = {
        name: ({entry.version for entry in entries}, {entry.version for entry in dev.get(name, [])})
        for name, entries in runtime.items()
        if {entry.version for entry in entries} != {entry.version for entry in dev.get(name, [])}
    }
    assert differing == {}, "runtime.txt and dev.txt differ (runtime, dev): run make lock"
    build = locks["build.txt"]
    assert {name: [e.version for e in build[name]] for name in build} == {
        name: [e.version for e in dev[name]] for name in build
    }


def test_installed_versions_match_the_dev_lock(locks: dict[str, dict[str, list[Entry]]]) -> None:
    """The running virtualenv is the lock: what `make install` promises."""
    checked, drifted = 0, []
    for name, entries in locks["dev.txt"].items():
        for entry in entries:
            if not entry.applies():
                continue
            checked += 1
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                drifted.append(f"{name}: not installed, locked {entry.version}")
                continue
            if entry.version is None or Version(installed) != Version(entry.version):
                drifted.append(f"{name}: installed {installed}, locked {entry.version}")
    assert checked > 50
    assert drifted == [], "this virtualenv is not the lock; run make install"


def test_make_install_installs_the_lock_and_only_the_lock(tmp_path: Path) -> None:
    commands = make("-n", "install", f"VENV={tmp_path / 'venv'}")
    installs = pip_installs(commands)
    assert any("--require-hashes" in line and "-r requirements/dev.txt" in line for line in installs)
    assert any("--no-deps --no-build-isolation -e ." in line for line in installs)
    floating = [line for line in installs if "--require-hashes" not in line and "--no-deps" not in line]
    assert floating == []
    assert "pip check" in commands


@pytest.mark.parametrize("changed", ["requirements/dev.txt", "pyproject.toml"])
def test_a_changed_lock_or_pyproject_reinstalls(tmp_path: Path, changed: str) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()
    assert pip_installs(make("-n", "install", f"VENV={venv}")) == []
    assert pip_installs(make("-n", "-W", changed, "install", f"VENV={venv}")) != []


@pytest.mark.parametrize(("upgrade", "flag"), [("", False), ("1", True)])
def test_make_lock_writes_all_three_universal_hashed_locks(tmp_path: Path, upgrade: str, flag: bool) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "uv").touch()  # `make lock` needs uv; -n runs nothing
    compiles = [
        line
        for line in make("-n", "lock", f"VENV={venv}", f"UPGRADE={upgrade}").splitlines()
        if "pip compile" in line
    ]
    outputs = [re.search(r"-o (\S+)", line) for line in compiles]
    assert [match.group(1) for match in outputs if match] == [f"requirements/{name}" for name in LOCKS]
    for line in compiles:
        assert "--universal" in line
        assert "--generate-hashes" in line
        assert ("--upgrade" in line) == flag


def test_make_help_lists_every_target() -> None:
    listed = {
        line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", make("help")).splitlines() if line.strip()
    }
    phony = set(re.findall(r"^\.PHONY: (\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert {"install", "lock", "test"} <= phony
    assert phony - listed == set()


def test_image_installs_the_runtime_lock_then_the_project_alone() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    runs = "\n".join(
        line.removeprefix("RUN ")
        for line in dockerfile.replace("\\\n", " ").splitlines()
        if line.startswith("RUN ")
    )
    installs = pip_installs(runs)
    assert any("--require-hashes -r requirements/runtime.txt" in line for line in installs)
    assert any("--no-deps" in line and "/tmp/dist/" in line for line in installs)
    assert len(installs) == 3, "the build tools, the runtime lock, the project"
    assert [line for line in installs if "--require-hashes" not in line and "--no-deps" not in line] == []
    assert "requirements/dev.txt" not in dockerfile
    assert "--no-build-isolation" in runs, "the wheel must be built by the locked setuptools"


def workflow(name: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return loaded


def test_ci_installs_from_the_lock() -> None:
    steps = workflow("ci.yml")["jobs"]["check"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert "make install" in runs
    assert runs.index("make install") < next(index for index, run in enumerate(runs) if "make check" in run)
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache-dependency-path"] == "requirements/*.txt"


def test_weekly_upgrade_opens_a_pull_request_only_after_the_tests_pass() -> None:
    loaded = workflow("lock-upgrade.yml")
    triggers = loaded[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"]
    assert "workflow_dispatch" in triggers
    (job,) = loaded["jobs"].values()
    assert job["env"] == workflow("ci.yml")["jobs"]["check"]["env"], "the same servers as ci.yml"
    assert set(job["services"]) == {"postgres"}
    steps = job["steps"]
    runs = [step.get("run", "") for step in steps]
    lock = runs.index("make lock UPGRADE=1")
    check = next(index for index, run in enumerate(runs) if run.startswith("make check"))
    pull_request = next(
        index
        for index, step in enumerate(steps)
        if step.get("uses", "").startswith("peter-evans/create-pull-request")
    )
    assert lock < check < pull_request
    assert not any(step.get("continue-on-error") for step in steps[lock : pull_request + 1])
    assert "if" not in steps[pull_request], "opened only when every step before it passed"
    assert steps[pull_request]["with"]["add-paths"].split() == [f"requirements/{name}" for name in LOCKS]
