"""kmock's ``KubernetesEmulator`` on a real HTTP port, as a stand-in Kubernetes API server.

What it is: an in-memory object store behind real HTTP, which the official ``kubernetes``
client talks to unchanged (discovery, PATCH/POST/GET/DELETE, Status error bodies). It
proves that the service sends the right requests with the right bodies and reads back
what is stored.

What it is not (kmock 0.8): an apiserver. Namespace URLs (``/api/v1/namespaces[/name]``)
are not routed (creating one even fails in its URL parser); server-side apply is a plain
JSON merge that answers 404 for objects that do not exist yet; there is no field
ownership, defaulting, validation, ``managedFields``, ``resourceVersion`` or namespace
lifecycle. :func:`serve_namespaces` fills the Namespace gap with kmock's own reaction DSL,
storing Namespaces in the emulator's object store, so tests can assert on them like on
any other object. Everything else it cannot do is left to the opt-in real-cluster test.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import yaml

NAMESPACES = kmock.resource("v1/namespaces")
_NAMESPACE_PATH = re.compile(r"/api/v1/namespaces/[^/]+")


def serve_namespaces(emulator: kmock.KubernetesEmulator) -> None:
    """Serve apply (PATCH), GET and DELETE of single Namespaces from the emulator's store."""

    def react(request: kmock.Request) -> Any:
        name = request.url.path.rsplit("/", 1)[-1]
        key = (NAMESPACES, None, name)
        exists = key in emulator.objects and not emulator.objects[key].deleted
        if request.method == kmock.method.PATCH:
            if exists:
                emulator.objects[key].patch(request.data)
            else:
                emulator.objects[key] = request.data
            return emulator.objects[key].raw
        if not exists:
            raise kmock.KubernetesObjectNotFoundError()
        if request.method == kmock.method.DELETE:
            emulator.objects[key].delete()
            return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}
        return emulator.objects[key].raw

    emulator[_NAMESPACE_PATH] << react


def declare_argocd(emulator: kmock.KubernetesEmulator) -> None:
    """Make the emulator serve ``argoproj.io/v1alpha1`` Applications and AppProjects, as if
    Argo CD's CRDs were installed."""
    for plural, kind in (("applications", "Application"), ("appprojects", "AppProject")):
        emulator.resources[f"argoproj.io/v1alpha1/{plural}"] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )


@contextlib.asynccontextmanager
async def running_emulator(*, argocd: bool = False) -> AsyncIterator[kmock.KubernetesEmulator]:
    emulator = kmock.KubernetesEmulator()
    emulator.resources.load_bundled()
    serve_namespaces(emulator)
    if argocd:
        declare_argocd(emulator)
    async with emulator, kmock.Server(emulator):
        yield emulator


def write_kubeconfig(path: Path, contexts: dict[str, str], current: str) -> Path:
    """A kubeconfig with one context per ``{name: server URL}``; ``current`` is the current context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": name, "cluster": {"server": server}} for name, server in contexts.items()],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "tester"}} for name in contexts],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def stored(
    emulator: kmock.KubernetesEmulator, resource: str, namespace: str | None, name: str
) -> dict[str, Any] | None:
    """The object as the emulator holds it now, or None when absent or deleted."""
    key = (kmock.resource(resource), namespace, name)
    if key not in emulator.objects or emulator.objects[key].deleted:
        return None
    raw: dict[str, Any] = emulator.objects[key].raw
    return raw
