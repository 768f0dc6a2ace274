"""The publisher's Python object ids equal what git itself computes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.git_publisher.domain.git_objects import blob_id, tree_id


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(["git", f"--git-dir={repo}", *args], input=stdin, capture_output=True, check=True)
    return result.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "objects.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)
    return path


@pytest.mark.parametrize(
    "content",
    [b"", b"apiVersion: v1\nkind: Namespace\n", "ünïcödé: ✓\n".encode(), bytes(range(256)) * 3],
)
def test_blob_id_matches_git_hash_object(repo: Path, content: bytes) -> None:
    assert blob_id(content) == git(repo, "hash-object", "--stdin", stdin=content)


def write_tree_with_git(repo: Path, files: dict[str, bytes]) -> str:
    """Build the tree the slow, obviously-right way: hash-object -w, then mktree bottom-up."""

    def build(entries: dict[str, bytes]) -> str:
        here: list[str] = []
        subdirs: dict[str, dict[str, bytes]] = {}
        for path, content in entries.items():
            head, sep, rest = path.partition("/")
            if sep:
                subdirs.setdefault(head, {})[rest] = content
            else:
                here.append(f"100644 blob {git(repo, 'hash-object', '-w', '--stdin', stdin=content)}\t{head}")
        here += [f"040000 tree {build(inner)}\t{name}" for name, inner in subdirs.items()]
        return git(repo, "mktree", stdin=("\n".join(here) + "\n").encode())

    return build(files)


BUNDLE = {
    "namespace.yaml": b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: payments-api-0123abcd\n",
    "resourcequota.yaml": b"kind: ResourceQuota\n",
    "limitrange.yaml": b"kind: LimitRange\n",
    "networkpolicy.yaml": b"kind: NetworkPolicy\n",
    "policypack.yaml": b"kind: ConfigMap\n",
    "argocd-application.yaml": b"kind: Application\n",
}


@pytest.mark.parametrize(
    "files",
    [
        BUNDLE,
        {"a": b"1"},
        # Ordering traps: git sorts a subtree "a" as "a/", so it comes after "a.yaml" and "a-b".
        {"a.yaml": b"x", "a/b.yaml": b"y", "a-b": b"z", "a0": b"w", "A": b"upper"},
        {"deep/er/still/file.yaml": b"nested", "deep/sibling": b"s", "top": b"t"},
    ],
)
def test_tree_id_matches_git_mktree(repo: Path, files: dict[str, bytes]) -> None:
    assert tree_id(files) == write_tree_with_git(repo, files)


def test_tree_id_is_a_function_of_content_only() -> None:
    assert tree_id(dict(reversed(list(BUNDLE.items())))) == tree_id(BUNDLE)
    changed = {**BUNDLE, "namespace.yaml": BUNDLE["namespace.yaml"] + b"\n"}
    assert tree_id(changed) != tree_id(BUNDLE)
