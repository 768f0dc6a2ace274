"""A rendered environment bundle as the renderer publishes it (SPEC "Rendered GitOps layout").

Built here, not taken from the renderer, so cluster tests do not depend on another
service (the quota and limit values are the SPEC tables of :mod:`tests.support.seed_plans`);
a unit test validates it against the Kubernetes OpenAPI schemas so it stays real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from contracts.events import RenderedFile
from tests.support.seed_plans import LIMITS, QUOTAS

LABEL_PREFIX = "platform.example.com"
APP_REPOSITORY = "https://github.com/example/payments-api.git"
# The files of every bundle, in the renderer's order; a class's policy packs add theirs after them.
CORE_FILES = [
    "namespace.yaml",
    "resourcequota.yaml",
    "limitrange.yaml",
    "networkpolicy.yaml",
    "policypack.yaml",
    "argocd-baseline-application.yaml",
    "argocd-appproject.yaml",
    "argocd-application.yaml",
]


@dataclass(frozen=True)
class Bundle:
    request_id: str
    namespace: str
    files: list[RenderedFile]

    def objects(self) -> list[dict[str, Any]]:
        return [doc for file in self.files for doc in yaml.safe_load_all(file.content) if doc]


def _dump(*documents: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False)


def preview_bundle(
    request_id: str = "req-0123456789abcdef",
    team: str = "payments",
    app: str = "api",
    *,
    namespace: str | None = None,
    zero_trust: bool = False,
) -> Bundle:
    """The preview class (small quota, one namespace); ``zero_trust`` adds the egress policies."""
    namespace = namespace or f"{team}-{app}-{request_id[-8:]}"
    application = f"{team}-{app}-{request_id}"
    default, maximum = LIMITS["small"]
    labels = {
        f"{LABEL_PREFIX}/team": team,
        f"{LABEL_PREFIX}/app": app,
        f"{LABEL_PREFIX}/class": "preview",
        f"{LABEL_PREFIX}/quota-profile": "small",
        f"{LABEL_PREFIX}/request-id": request_id,
    }

    def meta(name: str, ns: str | None = namespace) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if ns is not None:
            metadata["namespace"] = ns
        metadata["labels"] = dict(labels)
        return metadata

    policies: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("default-deny-ingress"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    ]
    if zero_trust:
        policies += [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta("default-deny-egress"),
                "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta("allow-dns-egress"),
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
                },
            },
        ]
    files = [
        RenderedFile(
            name="namespace.yaml",
            content=_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(namespace, None)}),
        ),
        RenderedFile(
            name="resourcequota.yaml",
            content=_dump(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": meta("platform-defaults"),
                    "spec": {"hard": dict(QUOTAS["preview"])},
                }
            ),
        ),
        RenderedFile(
            name="limitrange.yaml",
            content=_dump(
                {
                    "apiVersion": "v1",
                    "kind": "LimitRange",
                    "metadata": meta("platform-defaults"),
                    "spec": {
                        "limits": [
                            {
                                "type": "Container",
                                "default": dict(default),
                                "defaultRequest": dict(default),
                                "max": dict(maximum),
                            }
                        ]
                    },
                }
            ),
        ),
        RenderedFile(name="networkpolicy.yaml", content=_dump(*policies)),
        RenderedFile(
            name="policypack.yaml",
            content=_dump(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": meta("platform-policy-pack"),
                    "data": {
                        "policy-packs": "baseline-security\npreview-networking\ncost-guardrails",
                        "quota-profile": "small",
                        "estimated-monthly-cost-usd": "150",
                    },
                }
            ),
        ),
        RenderedFile(
            name="argocd-baseline-application.yaml",
            content=_dump(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": meta(f"{application}-baseline", "argocd"),
                    "spec": {
                        "project": "default",
                        "sources": [
                            {
                                "repoURL": "https://gitops.example.invalid/platform/gitops.git",
                                "targetRevision": "main",
                                "path": f"clusters/us-east-1/teams/{team}/{app}/{request_id}",
                                "directory": {"exclude": "argocd-*.yaml"},
                            }
                        ],
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
                        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
                    },
                }
            ),
        ),
        RenderedFile(
            name="argocd-appproject.yaml",
            content=_dump(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "AppProject",
                    "metadata": meta(application, "argocd"),
                    "spec": {
                        "sourceRepos": [APP_REPOSITORY],
                        "destinations": [
                            {"server": "https://kubernetes.default.svc", "namespace": namespace}
                        ],
                        "clusterResourceWhitelist": [],
                        "namespaceResourceBlacklist": [
                            {"group": "", "kind": "Namespace"},
                            {"group": "", "kind": "ResourceQuota"},
                            {"group": "", "kind": "LimitRange"},
                            {"group": "networking.k8s.io", "kind": "NetworkPolicy"},
                            {"group": "rbac.authorization.k8s.io", "kind": "Role"},
                            {"group": "rbac.authorization.k8s.io", "kind": "RoleBinding"},
                        ],
                    },
                }
            ),
        ),
        RenderedFile(
            name="argocd-application.yaml",
            content=_dump(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": meta(application, "argocd"),
                    "spec": {
                        "project": application,
                        "sources": [{"repoURL": APP_REPOSITORY, "targetRevision": "main", "path": "deploy"}],
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
                        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
                    },
                }
            ),
        ),
    ]
    return Bundle(request_id=request_id, namespace=namespace, files=files)
