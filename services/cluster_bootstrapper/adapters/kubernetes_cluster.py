"""Kubernetes clusters through the official ``kubernetes`` client.

One ``ApiClient`` per kube context (a region maps to a context), created on first use.
Objects are addressed generically: the kind's plural and scope come from API discovery
(``/api/v1``, ``/apis/<group>/<version>``), so pack extras and CRDs need no code here.
Every client call blocks, so it runs in a worker thread (``asyncio.to_thread``).

Apply is server-side apply: ``PATCH`` with ``application/apply-patch+yaml`` (JSON is
YAML), ``fieldManager`` fixed by configuration and ``force=true`` so the platform takes
back fields another manager changed. A real apiserver creates the object on apply; when
apply answers 404 for the object itself, the adapter creates it with ``POST`` instead.
That fallback never changes the outcome against a real apiserver (its 404 there means the
namespace or the resource type is missing, and the create fails the same way) but lets
API stand-ins that cannot create by apply (kmock) hold the object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from prometheus_client import Histogram

from libs.telemetry import REGISTRY, Stopwatch
from services.cluster_bootstrapper.domain.manifests import DesiredObject, ObjectRef
from services.cluster_bootstrapper.service_layer.ports import Cluster, ClusterUnavailable, ObjectRejected

log = logging.getLogger(__name__)

T = TypeVar("T")

CLUSTER_CALL_SECONDS = Histogram(
    "platform_cluster_call_seconds",
    "Kubernetes API call latency by verb and outcome (ok, not_found, rejected, unavailable).",
    ["verb", "outcome"],
    registry=REGISTRY,
)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# 400 and 422 describe the object itself; no amount of retrying makes it valid. Everything
# else (403 while RBAC is granted, 404/409 during namespace termination, 429, 5xx) can
# heal, so it is retried with backoff and only then reported as request.failed.
_PERMANENT_STATUSES = frozenset({400, 415, 422})


class _Missing(Exception):
    """The API answered 404 for the addressed object or resource."""


@dataclass(frozen=True)
class ResourceInfo:
    plural: str
    namespaced: bool


def _status_details(error: ApiException) -> tuple[str, list[str]]:
    """Reason and failing fields from a Kubernetes ``Status`` body, without values.

    Messages of a Status may quote field values; only field paths and reason codes are
    kept, so nothing from the object's content (or the server) reaches events and logs.
    """
    try:
        status = json.loads(error.body or "{}")
    except (ValueError, TypeError):
        return "", []
    if not isinstance(status, dict):
        return "", []
    reason = status.get("reason") if isinstance(status.get("reason"), str) else ""
    causes = (status.get("details") or {}).get("causes") if isinstance(status.get("details"), dict) else None
    fields = []
    for cause in causes if isinstance(causes, list) else []:
        if isinstance(cause, dict) and isinstance(cause.get("field"), str):
            kind = cause.get("reason") if isinstance(cause.get("reason"), str) else "invalid"
            fields.append(f"{cause['field']} ({kind})")
    return str(reason), fields[:10]


class KubernetesCluster(Cluster):
    """The :class:`Cluster` port over the Kubernetes API of each region's cluster."""

    def __init__(
        self,
        *,
        kubeconfig: Path | None,
        contexts: Mapping[str, str],
        field_manager: str,
        timeout_seconds: float,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._contexts = dict(contexts)
        self._field_manager = field_manager
        self._timeout = timeout_seconds
        self._clients: dict[str | None, ApiClient] = {}
        self._lock = threading.Lock()
        # Positive discovery answers only: a CRD installed later must be picked up without a restart.
        self._resources: dict[tuple[str | None, str, str], ResourceInfo] = {}

    # -- clients -----------------------------------------------------------------------------

    def _context(self, region: str) -> str | None:
        return self._contexts.get(region)

    def _client(self, region: str) -> ApiClient:
        context = self._context(region)
        with self._lock:
            client = self._clients.get(context)
            if client is not None:
                return client
            try:
                if self._kubeconfig is None:
                    configuration = kubernetes.client.Configuration()
                    kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                    client = ApiClient(configuration)
                else:
                    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=str(self._kubeconfig), context=context, persist_config=False
                    )
            except (ConfigException, OSError) as exc:
                which = f"kube context {context!r}" if context else "the current kube context"
                raise ClusterUnavailable(
                    f"cannot load {which} for region {region} ({type(exc).__name__});"
                    " check PLATFORM_KUBECONFIG and PLATFORM_K8S_CONTEXTS"
                ) from None
            self._clients[context] = client
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()  # type: ignore[no-untyped-call]

    # -- raw calls ---------------------------------------------------------------------------

    def _call(
        self,
        region: str,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """One API call (blocking): the decoded JSON body, or ``ApiException`` / urllib3 errors."""
        client = self._client(region)
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, post_params = client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = client.call_api(method, url, headers, body, post_params, _request_timeout=self._timeout)
        response.read()  # type: ignore[no-untyped-call]
        return client.response_deserialize(response, {"2XX": "object"}).data

    async def _run(self, verb: str, what: str, region: str, call: Callable[[], T]) -> T:
        """Run ``call`` in a thread, mapping failures to the port's errors (404 to :class:`_Missing`)."""
        watch = Stopwatch()
        outcome = "ok"
        try:
            return await asyncio.to_thread(call)
        except ApiException as exc:
            if exc.status == 404:
                outcome = "not_found"
                raise _Missing from None
            reason, fields = _status_details(exc)
            label = f"HTTP {exc.status}{' ' + reason if reason else ''}"
            if exc.status in _PERMANENT_STATUSES:
                outcome = "rejected"
                detail = f": {'; '.join(fields)}" if fields else ""
                raise ObjectRejected(
                    f"{what} was rejected by the cluster of region {region} ({label}){detail}"
                ) from None
            outcome = "unavailable"
            raise ClusterUnavailable(
                f"{verb} {what} failed in the cluster of region {region} ({label})"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            outcome = "unavailable"
            raise ClusterUnavailable(
                f"{verb} {what}: the cluster API of region {region} is unreachable ({type(exc).__name__})"
            ) from None
        except ClusterUnavailable:
            outcome = "unavailable"
            raise
        finally:
            CLUSTER_CALL_SECONDS.labels(verb, outcome).observe(watch.elapsed())

    # -- discovery and paths -----------------------------------------------------------------

    async def _resource(self, region: str, api_version: str, kind: str) -> ResourceInfo | None:
        key = (self._context(region), api_version, kind)
        cached = self._resources.get(key)
        if cached is not None:
            return cached
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = await self._run(
                "discover", api_version, region, lambda: self._call(region, "GET", base)
            )
        except _Missing:
            return None  # the group/version is not served (e.g. the CRD is not installed)
        for resource in listing.get("resources") or []:
            # Subresources (``pods/status``) share the kind; only the resource itself is addressable.
            if resource.get("kind") == kind and "/" not in str(resource.get("name", "")):
                info = ResourceInfo(plural=str(resource["name"]), namespaced=bool(resource.get("namespaced")))
                self._resources[key] = info
                return info
        return None

    async def _paths(self, region: str, ref: ObjectRef) -> tuple[str, str]:
        """(collection path, object path) of ``ref``."""
        info = await self._resource(region, ref.api_version, ref.kind)
        if info is None:
            raise ClusterUnavailable(
                f"{ref.kind} ({ref.api_version}) is not served by the cluster of region {region}"
            )
        path = "/api/v1" if ref.api_version == "v1" else f"/apis/{ref.api_version}"
        if info.namespaced:
            if not ref.namespace:
                raise ObjectRejected(f"{ref.describe()} needs a namespace")
            path += f"/namespaces/{quote(ref.namespace, safe='')}"
        collection = f"{path}/{info.plural}"
        return collection, f"{collection}/{quote(ref.name, safe='')}"

    # -- the port ----------------------------------------------------------------------------

    async def serves(self, region: str, api_version: str, kind: str) -> bool:
        return await self._resource(region, api_version, kind) is not None

    async def apply(self, region: str, desired: DesiredObject) -> None:
        ref = desired.ref
        collection, item = await self._paths(region, ref)
        manifest = desired.manifest

        def server_side_apply() -> Any:
            query = [("fieldManager", self._field_manager), ("force", "true")]
            return self._call(
                region, "PATCH", item, query=query, body=manifest, content_type=APPLY_CONTENT_TYPE
            )

        def create() -> Any:
            try:
                query = [("fieldManager", self._field_manager)]
                return self._call(
                    region, "POST", collection, query=query, body=manifest, content_type="application/json"
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                return server_side_apply()  # created by someone else in between: apply over it

        try:
            await self._run("apply", ref.describe(), region, server_side_apply)
        except _Missing:
            try:
                await self._run("create", ref.describe(), region, create)
            except _Missing:
                # Against a real apiserver: the namespace is gone or terminating. Retry later.
                raise ClusterUnavailable(
                    f"apply {ref.describe()}: its namespace does not exist in the cluster of region {region}"
                ) from None

    async def read(self, region: str, ref: ObjectRef) -> dict[str, Any] | None:
        _, item = await self._paths(region, ref)
        try:
            live = await self._run("read", ref.describe(), region, lambda: self._call(region, "GET", item))
        except _Missing:
            return None
        return live if isinstance(live, dict) else None

    async def delete(self, region: str, ref: ObjectRef) -> bool:
        info = await self._resource(region, ref.api_version, ref.kind)
        if info is None:
            return False  # the kind is not served at all, so no such object can exist
        _, item = await self._paths(region, ref)
        try:
            await self._run(
                "delete",
                ref.describe(),
                region,
                lambda: self._call(region, "DELETE", item, query=[("propagationPolicy", "Background")]),
            )
        except _Missing:
            return False
        return True

    def regions(self) -> list[str]:
        return list(self._contexts)

    async def check(self, region: str | None = None) -> None:
        # One region, or every mapped region's context, or the current context when nothing is mapped.
        targets = [region] if region is not None else list(self._contexts) or [""]
        for target in targets:

            def version(target: str = target) -> Any:
                return self._call(target, "GET", "/version")

            await self._run("version", "the API server version", target, version)
