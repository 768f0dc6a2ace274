"""Settings of the renderer service: the kit's groups and its own."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.kubernetes_names import DNS1123_SUBDOMAIN, is_dns1123_label
from libs.settings import PlatformSettings, SecretUrl, setting
from services.renderer.domain.git_urls import url_problem
from services.renderer.domain.manifests import ENVIRONMENT_PROJECT

# Rendered when no GitOps URL is configured (development): obviously not a real host
# (.invalid is reserved), so an Application carrying it is recognisable at a glance.
PLACEHOLDER_GITOPS_REPO_URL = "https://gitops.example.invalid/platform/gitops.git"


@dataclass(frozen=True)
class RendererSettings(PlatformSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "renderer", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9104", doc="host:port for /healthz, /readyz and /metrics."
    )
    label_prefix: str = setting(
        "PLATFORM_LABEL_PREFIX",
        "platform.example.com",
        doc="Prefix of the platform labels (<prefix>/team, /app, /class, /quota-profile, /request-id).",
    )
    # A secret although it must not carry credentials here: git-publisher reads the same
    # variable, where it may, and when PLATFORM_ARGOCD_GITOPS_REPO_URL is set it is never rendered.
    gitops_repo_url: SecretUrl | None = setting(
        "PLATFORM_GITOPS_REPO_URL",
        None,
        doc="GitOps repository URL; Argo CD Applications pull from it unless PLATFORM_ARGOCD_GITOPS_REPO_URL"
        " is set. Must not contain credentials (it is written into the repository).",
    )
    argocd_gitops_repo_url: str | None = setting(
        "PLATFORM_ARGOCD_GITOPS_REPO_URL",
        None,
        doc="URL Argo CD pulls the GitOps repository from, when it differs from PLATFORM_GITOPS_REPO_URL"
        " (e.g. publish over SSH, pull over HTTPS). Without either, a placeholder URL is rendered.",
    )
    git_branch: str = setting(
        "PLATFORM_GIT_BRANCH", "main", doc="GitOps branch Argo CD syncs the environment directories from."
    )
    argocd_namespace: str = setting(
        "PLATFORM_ARGOCD_NAMESPACE", "argocd", doc="Namespace of the rendered Argo CD Applications."
    )
    argocd_project: str = setting(
        "PLATFORM_ARGOCD_PROJECT",
        ENVIRONMENT_PROJECT,
        doc="Argo CD project of each environment's app Application. {environment}: one AppProject per"
        " environment, rendered beside it (only the request's repository, only its namespace, no"
        " cluster-scoped kinds, no quota/limits/network policies/RBAC). Any other value names a project"
        " you manage; 'default' (anything goes) is refused in strict production mode.",
    )
    argocd_baseline_project: str = setting(
        "PLATFORM_ARGOCD_BASELINE_PROJECT",
        "default",
        doc="Argo CD project of each environment's baseline Application, which syncs the platform's own"
        " objects (Namespace, quota, limits, network policies) from the GitOps repository.",
    )
    argocd_destination_server: str = setting(
        "PLATFORM_ARGOCD_DESTINATION_SERVER",
        "https://kubernetes.default.svc",
        doc="Cluster API server the Applications deploy to, as registered in Argo CD.",
    )
    argocd_app_path: str = setting(
        "PLATFORM_ARGOCD_APP_PATH", ".", doc="Directory inside each app repository that Argo CD deploys."
    )
    kubernetes_schema_version: str = setting(
        "PLATFORM_KUBERNETES_SCHEMA_VERSION",
        "1.30.0",
        doc="Kubernetes version whose OpenAPI schemas every manifest is validated against"
        " (the oldest cluster version in use; one that kubernetes-validate ships).",
    )

    @property
    def argocd_source_repo_url(self) -> str:
        """The GitOps URL written into Applications (see PLATFORM_ARGOCD_GITOPS_REPO_URL)."""
        if self.argocd_gitops_repo_url:
            return self.argocd_gitops_repo_url
        return self.gitops_repo_url.reveal() if self.gitops_repo_url else PLACEHOLDER_GITOPS_REPO_URL

    def validate(self) -> list[str]:
        problems = super().validate()
        if len(self.label_prefix) > 253 or DNS1123_SUBDOMAIN.fullmatch(self.label_prefix) is None:
            problems.append("PLATFORM_LABEL_PREFIX must be a DNS subdomain (e.g. platform.example.com)")
        if not is_dns1123_label(self.argocd_namespace):
            problems.append("PLATFORM_ARGOCD_NAMESPACE must be a DNS-1123 label")
        for variable, project in (
            ("PLATFORM_ARGOCD_PROJECT", self.argocd_project),
            ("PLATFORM_ARGOCD_BASELINE_PROJECT", self.argocd_baseline_project),
        ):
            if project != ENVIRONMENT_PROJECT and (
                len(project) > 253 or DNS1123_SUBDOMAIN.fullmatch(project) is None
            ):
                problems.append(
                    f"{variable} must be {ENVIRONMENT_PROJECT} or an Argo CD project name (a DNS subdomain)"
                )
        if self.argocd_baseline_project == ENVIRONMENT_PROJECT:
            problems.append(
                "PLATFORM_ARGOCD_BASELINE_PROJECT must name a platform project: the environment's own"
                " project refuses the objects the baseline Application syncs"
            )
        if self.is_strict and self.argocd_project == "default":
            problems.append(
                "PLATFORM_ARGOCD_PROJECT=default lets every app repository deploy anything anywhere;"
                f" strict production mode needs {ENVIRONMENT_PROJECT} (the default) or a confined project"
            )
        for variable, value in (
            ("PLATFORM_GIT_BRANCH", self.git_branch),
            ("PLATFORM_ARGOCD_DESTINATION_SERVER", self.argocd_destination_server),
            ("PLATFORM_ARGOCD_APP_PATH", self.argocd_app_path),
        ):
            if not value.strip():
                problems.append(f"{variable} must not be empty")
        # Only the URL Argo CD gets is checked: it is written into every Application, while
        # PLATFORM_GITOPS_REPO_URL alone may hold the publisher's token when the other is set.
        rendered = (
            "PLATFORM_ARGOCD_GITOPS_REPO_URL" if self.argocd_gitops_repo_url else "PLATFORM_GITOPS_REPO_URL"
        )
        problem = url_problem(self.argocd_source_repo_url)
        if problem is not None:
            problems.append(
                f"{rendered} {problem}: it is written into every Argo CD Application"
                " (set PLATFORM_ARGOCD_GITOPS_REPO_URL to the URL Argo CD pulls from)"
            )
        if self.is_strict and not (self.argocd_gitops_repo_url or self.gitops_repo_url):
            problems.append(
                "PLATFORM_ARGOCD_GITOPS_REPO_URL or PLATFORM_GITOPS_REPO_URL is required"
                " in strict production mode"
            )
        return problems
