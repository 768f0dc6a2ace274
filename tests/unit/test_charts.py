"""The Helm charts against the code, so they cannot drift apart.

Every chart in ``charts/`` is rendered by the Helm Go SDK (``helm-python-sdk``: the real
template engine, ``helm dependency update`` and ``helm lint``, no helm binary) with its
default values, with its ``deploy/aws`` values, and with every optional feature on. The
rendered objects are checked against what the code reads and serves:

- each Deployment runs ``platformd <service>`` and probes ``/healthz`` and ``/readyz`` on
  the port the service binds (the port named in ``PLATFORM_HEALTH_ADDRESS`` or, for the
  gateway, ``PLATFORM_ADDRESS``);
- every backend chart has a ``pre-install,pre-upgrade`` hook Job running ``platformd
  migrate <service>`` with exactly the Deployment's settings and Secret references, and
  referencing nothing the release itself creates (on install none of it exists yet);
- every variable a chart sets is one the service's settings class reads, secret settings
  are only ever Secret references, and the chart renders no Secret;
- the rendered settings (with stand-in Secret values) pass the service's own
  ``load_settings`` validation, so a release with these values starts and migrates;
- settings that must agree across releases (the stream, the branch) do.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from libs.settings import SettingsError, describe_settings, load_settings, secret_variables
from services.tools.platformd.registry import SERVICES, service_entry

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk has wheels for linux/x86_64 and macOS/arm64 only"
)

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
DEPLOY = ROOT / "deploy"
CHART_NAMES = [name.replace("_", "-") for name in SERVICES]
BACKEND_CHARTS = [name for name in CHART_NAMES if name != "gateway"]
NAMESPACE = "platform"
KUBERNETES_VERSION = "1.30.0"
# Kinds from CRDs, which kubernetes-validate has no schema for.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# Stand-ins for what the Secrets hold, shaped like real values so validation is real.
SECRET_STAND_INS = {
    "PLATFORM_POSTGRES_DSN": "postgresql://svc:pw@db.internal:5432/platform",
    "PLATFORM_NATS_URL": "nats://nats.nats.svc:4222",
    "PLATFORM_APPROVAL_HMAC_SECRET": "a" * 48,
    "PLATFORM_ATTESTATION_HMAC_SECRET": "t" * 48,
    "PLATFORM_JWT_HS256_SECRET": "j" * 48,
    "PLATFORM_GITOPS_REPO_URL": "https://git.example.com/platform/gitops.git",
    "PLATFORM_GIT_TOKEN": "token",
}
# Settings every backend release must agree on: each service creates or updates the
# stream with its own values at start.
STREAM_SETTINGS = (
    "PLATFORM_EVENTS_STREAM",
    "PLATFORM_EVENTS_SUBJECT_PREFIX",
    "PLATFORM_EVENTS_REPLICAS",
    "PLATFORM_EVENTS_MAX_AGE_DAYS",
    "PLATFORM_EVENTS_DUPLICATE_WINDOW_SECONDS",
)
# Explicit in every backend chart's values.yaml rather than left to code defaults.
DURABILITY_SETTINGS = (
    "PLATFORM_EVENTS_REPLICAS",
    "PLATFORM_EVENTS_DUPLICATE_WINDOW_SECONDS",
    "PLATFORM_RECONCILE_MAX_ATTEMPTS",
    "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS",
    "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS",
    "PLATFORM_RECONCILE_TIMEOUT_SECONDS",
    "PLATFORM_AUTO_MIGRATE",
)


Manifest = dict[str, Any]
Rendered = dict[tuple[str, str], list[Manifest]]
Charts = dict[str, helm.Chart]


# --- values --------------------------------------------------------------------------


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """What Helm does with several ``-f`` files: maps merge, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def aws_values(chart: str) -> dict[str, Any]:
    common = yaml.safe_load((DEPLOY / "aws" / "values-common.yaml").read_text())
    own = yaml.safe_load((DEPLOY / "aws" / f"values-{chart}.yaml").read_text()) or {}
    return merge_values(common, own)


def everything_values(chart: str) -> dict[str, Any]:
    """Every optional template on, so each one is rendered and schema-checked."""
    values: dict[str, Any] = {
        "autoscaling": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
        "extraVolumes": [{"name": "ssh", "secret": {"secretName": "platform-ssh"}}],
        "extraVolumeMounts": [{"name": "ssh", "mountPath": "/home/platform/.ssh", "readOnly": True}],
        "image": {"digest": "sha256:" + "0" * 64},
        "natsIdentity": {"existingSecret": f"platform-nats-{chart}"},
        "migration": {"natsIdentity": {"existingSecret": "platform-nats-provisioner"}},
    }
    if chart == "gateway":
        values["ingress"] = {
            "enabled": True,
            "className": "nginx",
            "tls": [{"hosts": ["platform.example.com"]}],
        }
    if chart == "git-publisher":
        # One ReadWriteOnce volume: one replica, no autoscaling (the chart refuses otherwise).
        values.update(replicaCount=1, autoscaling={"enabled": False})
        values["gitRepo"] = {"persistence": {"enabled": True, "storageClassName": "gp3"}}
    if chart == "cluster-bootstrapper":
        values["kubeconfig"] = {"existingSecret": "platform-kubeconfigs"}
        values["rbac"] = {"create": False}
        values["env"] = {"PLATFORM_K8S_CONTEXTS": "us-east-1=use1,us-west-2=usw2"}
    return values


VARIANTS = {
    "defaults": lambda chart: None,
    "aws": aws_values,
    "everything": everything_values,
}


# --- rendering -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chart_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of charts/ with each chart's platform-lib dependency resolved.

    ``helm dependency update`` writes charts/ and Chart.lock into the chart: done on a copy
    so the work tree stays clean (the relative file:// reference works the same there).
    """
    copy = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    for name in CHART_NAMES:
        helm.dependency_update(copy / name)
    return {name: copy / name for name in [*CHART_NAMES, "platform-lib"]}


@pytest.fixture(scope="session")
def loaded_charts(chart_dirs: dict[str, Path]) -> Iterator[dict[str, helm.Chart]]:
    charts = {name: helm.Chart.load(chart_dirs[name]) for name in CHART_NAMES}
    yield charts
    for chart in charts.values():
        chart.close()


def render(chart: helm.Chart, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every object the release would create, hooks included (as ``helm template``)."""
    rendered = chart.render(values, name=chart.name, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


@pytest.fixture(scope="session")
def rendered(loaded_charts: dict[str, helm.Chart]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        (name, variant): render(loaded_charts[name], make(name))
        for name in CHART_NAMES
        for variant, make in VARIANTS.items()
    }


CASES = [(name, variant) for name in CHART_NAMES for variant in VARIANTS]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[Manifest] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def effective_env(workload: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Variable -> ("value", text) or ("secret", name, key, optional), envFrom resolved."""
    env: dict[str, tuple[Any, ...]] = {}
    spec = container(workload)
    for source in spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"unexpected envFrom {source}"
        name = source["configMapRef"]["name"]
        configmap = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)
        env.update({key: ("value", value) for key, value in configmap["data"].items()})
    for entry in spec.get("env", []):
        assert entry["name"] not in env, f"{entry['name']} is set twice"
        if "value" in entry:
            env[entry["name"]] = ("value", entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = ("secret", ref["name"], ref["key"], ref.get("optional", False))
    return env


def environ_with_stand_ins(env: dict[str, tuple[Any, ...]]) -> dict[str, str]:
    """The process environment, Secret references replaced by realistic stand-ins."""
    return {
        name: source[1] if source[0] == "value" else SECRET_STAND_INS[name] for name, source in env.items()
    }


def settings_class(chart: str) -> type[Any]:
    return service_entry(chart).settings_class


def secret_settings(chart: str) -> set[str]:
    return secret_variables(settings_class(chart))


def listen_port(env: dict[str, tuple[Any, ...]], chart: str) -> int:
    variable = "PLATFORM_ADDRESS" if chart == "gateway" else "PLATFORM_HEALTH_ADDRESS"
    kind, address = env[variable]
    assert kind == "value"
    host, _, port = address.rpartition(":")
    # Probes come from the kubelet over the pod IP: loopback would fail every probe.
    assert host in ("0.0.0.0", ""), f"{variable}={address} is not reachable by the kubelet"
    return int(port)


# --- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("chart", [*CHART_NAMES, "platform-lib"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_helm_lint_is_clean(chart_dirs: dict[str, Path], chart: str, variant: str) -> None:
    values = None if chart == "platform-lib" else VARIANTS[variant](chart)
    report = helm.lint(
        chart_dirs[chart], values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES_VERSION}"
    )
    # Severity 1 is informational ("icon is recommended").
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report["errors"]
    assert not problems, problems


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_every_object_is_valid_for_kubernetes(rendered: Rendered, chart: str, variant: str) -> None:
    objects = rendered[chart, variant]
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        # strict: a misspelt or misplaced field is an error, not silently dropped.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_deployment_runs_the_service_with_probes_on_its_port(
    rendered: Rendered, chart: str, variant: str
) -> None:
    objects = rendered[chart, variant]
    deployment = one(objects, "Deployment")
    spec = container(deployment)
    assert spec["command"] == ["platformd", chart]
    env = effective_env(deployment, objects)
    port = listen_port(env, chart)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert list(ports.values()) == [port]
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = spec[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port, f"{probe} is not on port {port}"
    # The Service targets the same port (what ServiceMonitor and Ingress go through).
    service = one(objects, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == list(ports)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_pods_run_non_root_on_a_read_only_root_filesystem(
    rendered: Rendered, chart: str, variant: str
) -> None:
    objects = rendered[chart, variant]
    for workload in [one(objects, "Deployment"), *of_kind(objects, "Job")]:
        pod = workload["spec"]["template"]["spec"]
        spec = container(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
        # Read-only root: /tmp must be a volume.
        assert any(m["mountPath"] == "/tmp" for m in spec["volumeMounts"])
        assert spec["resources"]["requests"]


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_shutdown_drain_fits_in_the_grace_period(rendered: Rendered, chart: str, variant: str) -> None:
    objects = rendered[chart, variant]
    deployment = one(objects, "Deployment")
    env = environ_with_stand_ins(effective_env(deployment, objects))
    defaults = {variable: default for variable, default, _doc in describe_settings(settings_class(chart))}
    shutdown = float(
        env.get("PLATFORM_SHUTDOWN_TIMEOUT_SECONDS", defaults["PLATFORM_SHUTDOWN_TIMEOUT_SECONDS"])
    )
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > shutdown


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_migration_hook_job(rendered: Rendered, chart: str, variant: str) -> None:
    objects = rendered[chart, variant]
    jobs = of_kind(objects, "Job")
    if chart == "gateway":
        assert jobs == [], "the gateway owns no schema"
        return
    job = one(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert container(job)["command"] == ["platformd", "migrate", chart]
    # migrate loads and validates the service's full settings first: same environment, but
    # for the NATS identity, which is the provisioner's (it alone may configure the stream).
    deployment = one(objects, "Deployment")
    job_env, deployment_env = effective_env(job, objects), effective_env(deployment, objects)
    identity = {"PLATFORM_NATS_NKEY_SEED_FILE", "PLATFORM_NATS_INBOX_PREFIX"}
    assert {k: v for k, v in job_env.items() if k not in identity} == {
        k: v for k, v in deployment_env.items() if k not in identity
    }
    if variant == "everything":
        assert job_env["PLATFORM_NATS_INBOX_PREFIX"] == ("value", "_INBOX_provisioner")
        seed = job_env["PLATFORM_NATS_NKEY_SEED_FILE"][1]
        mounted = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
        volume = next(
            v
            for v in job["spec"]["template"]["spec"]["volumes"]
            if v["name"] == mounted[str(Path(seed).parent)]
        )
        assert volume["secret"]["secretName"] == "platform-nats-provisioner"
    else:
        assert job_env.keys() & identity == deployment_env.keys() & identity
    # ... and the same Secret-backed files (the kubeconfig is validated at load too).
    secret_volumes = [
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in v and v["name"] in {m["name"] for m in container(deployment)["volumeMounts"]}
    ]
    job_volumes = job["spec"]["template"]["spec"]["volumes"]
    # The variant with every option on mounts secret files: there, at least, the loop runs.
    assert secret_volumes or variant != "everything"
    for volume in secret_volumes:
        assert volume in job_volumes
        mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"])
        assert mount in container(job)["volumeMounts"]


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_migration_job_needs_nothing_the_release_creates(
    rendered: Rendered, chart: str, variant: str
) -> None:
    """A pre-install hook runs before the release's other objects exist."""
    objects = rendered[chart, variant]
    created = {(o["kind"], o["metadata"]["name"]) for o in objects if not is_hook(o)}
    jobs = of_kind(objects, "Job")
    assert jobs or chart == "gateway", "every chart but the gateway's migrates a schema"
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName")
        assert account is None or ("ServiceAccount", account) not in created
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) not in created
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) not in created
        spec = container(job)
        assert "envFrom" not in spec
        for entry in spec["env"]:
            assert "configMapKeyRef" not in entry.get("valueFrom", {})


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_secrets_are_referenced_never_inlined(rendered: Rendered, chart: str, variant: str) -> None:
    objects = rendered[chart, variant]
    assert of_kind(objects, "Secret") == [], "the charts never carry a secret"
    secrets = secret_settings(chart)
    configmaps = of_kind(objects, "ConfigMap")
    assert configmaps
    for configmap in configmaps:
        assert not secrets & set(configmap["data"]), "a secret setting in a ConfigMap"
    for workload in [one(objects, "Deployment"), *of_kind(objects, "Job")]:
        for name, source in effective_env(workload, objects).items():
            if name in secrets:
                assert source[0] == "secret", f"{name} is inlined in the {workload['kind']}"


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_a_secret_setting_as_a_plain_value_does_not_render(loaded_charts: Charts, chart: str) -> None:
    for name in sorted(secret_settings(chart)):
        with pytest.raises(helm.HelmRenderError, match="is a secret setting"):
            render(loaded_charts[chart], {"env": {name: "inline"}})


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_every_variable_is_one_the_service_reads(rendered: Rendered, chart: str, variant: str) -> None:
    objects = rendered[chart, variant]
    known = {variable for variable, _default, _doc in describe_settings(settings_class(chart))}
    known |= {f"{name}_FILE" for name in secret_settings(chart)}
    named: set[str] = set()
    for configmap in of_kind(objects, "ConfigMap"):
        named |= set(configmap["data"])
    for workload in [one(objects, "Deployment"), *of_kind(objects, "Job")]:
        named |= {entry["name"] for entry in container(workload).get("env", [])}
    assert named, "no settings rendered"
    assert named - known == set(), f"{chart} does not read these (see `platformd config {chart}`)"


@pytest.mark.parametrize(("chart", "variant"), [(c, v) for c, v in CASES if v != "everything"])
def test_rendered_settings_pass_the_services_validation(rendered: Rendered, chart: str, variant: str) -> None:
    """What the Deployment and the migration Job get is a configuration the service accepts."""
    objects = rendered[chart, variant]
    environ = environ_with_stand_ins(effective_env(one(objects, "Deployment"), objects))
    if chart == "gateway" and variant == "defaults":
        # Strict mode needs the site's OIDC issuer and audience, which no default can name.
        with pytest.raises(SettingsError) as refused:
            load_settings(settings_class(chart), environ)
        assert sorted(refused.value.problems) == [
            "PLATFORM_JWT_HS256_SECRET or PLATFORM_OIDC_ISSUER_URL is required (the API always authenticates)",
            "PLATFORM_OIDC_AUDIENCE is required in strict production mode",
            "PLATFORM_OIDC_ISSUER_URL is required in strict production mode",
        ]
        return
    settings = load_settings(settings_class(chart), environ)
    assert settings.is_strict, "charts deploy production: strict mode on"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_releases_agree_on_shared_settings(rendered: Rendered, variant: str) -> None:
    def settings_of(chart: str) -> dict[str, tuple[Any, ...]]:
        objects = rendered[chart, variant]
        return effective_env(one(objects, "Deployment"), objects)

    env = {chart: settings_of(chart) for chart in CHART_NAMES}
    for name in STREAM_SETTINGS:
        assert len({env[chart].get(name) for chart in BACKEND_CHARTS}) == 1, f"{name} differs"
    assert len({env[chart].get("PLATFORM_RPC_SUBJECT_PREFIX") for chart in CHART_NAMES}) == 1
    assert env["renderer"]["PLATFORM_GIT_BRANCH"] == env["git-publisher"]["PLATFORM_GIT_BRANCH"]
    assert (
        env["renderer"]["PLATFORM_KUBERNETES_SCHEMA_VERSION"]
        == env["policy"]["PLATFORM_KUBERNETES_SCHEMA_VERSION"]
    )


@pytest.mark.parametrize(("chart", "variant"), CASES)
def test_each_workload_references_only_its_own_services_secrets(
    rendered: Rendered, chart: str, variant: str
) -> None:
    """Derived from the settings class: a release gets no Secret reference its service does
    not read (the gateway never the approval or attestation key, nor the database DSN)."""
    objects = rendered[chart, variant]
    own = secret_settings(chart)
    for workload in [one(objects, "Deployment"), *of_kind(objects, "Job")]:
        env = effective_env(workload, objects)
        referenced = {name.removesuffix("_FILE") for name, source in env.items() if source[0] == "secret"}
        assert referenced, f"{chart}: no Secret referenced at all"
        assert referenced <= own, f"{chart} {workload['kind']} references {referenced - own}"
    if chart == "gateway":
        assert not {"PLATFORM_APPROVAL_HMAC_SECRET", "PLATFORM_ATTESTATION_HMAC_SECRET"} & own
        assert "PLATFORM_POSTGRES_DSN" not in own


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_only_approval_and_git_publisher_hold_the_attestation_key(rendered: Rendered, variant: str) -> None:
    """The attestation key signs (approval) and verifies (git-publisher) what approvers must not
    be able to forge; git-publisher never gets the approval secret every approver holds."""

    def secret_refs(chart: str) -> dict[str, tuple[Any, ...]]:
        objects = rendered[chart, variant]
        env = effective_env(one(objects, "Deployment"), objects)
        return {name: source for name, source in env.items() if source[0] == "secret"}

    refs = {chart: secret_refs(chart) for chart in CHART_NAMES}
    holders = {chart for chart in CHART_NAMES if "PLATFORM_ATTESTATION_HMAC_SECRET" in refs[chart]}
    assert holders == {"approval", "git-publisher"}
    assert "PLATFORM_APPROVAL_HMAC_SECRET" in refs["approval"]
    assert "PLATFORM_APPROVAL_HMAC_SECRET" not in refs["git-publisher"]
    for chart in holders:
        assert refs[chart]["PLATFORM_ATTESTATION_HMAC_SECRET"][3] is False, "a required key, not optional"
    if variant == "aws":  # one Secret for both releases, so they cannot disagree
        assert (
            refs["approval"]["PLATFORM_ATTESTATION_HMAC_SECRET"]
            == refs["git-publisher"]["PLATFORM_ATTESTATION_HMAC_SECRET"]
        )


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_durability_settings_are_explicit_in_values(chart: str) -> None:
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    assert values["replicaCount"] >= 2
    assert values["podDisruptionBudget"]["enabled"] is True
    assert values["env"]["PLATFORM_ENV"] == "prod"
    if chart != "gateway":
        missing = [name for name in DURABILITY_SETTINGS if not values["env"].get(name)]
        assert missing == []
        assert values["env"]["PLATFORM_EVENTS_REPLICAS"] == "3"
        assert values["env"]["PLATFORM_AUTO_MIGRATE"] == "false"


def test_nats_values_are_clustered_r3_with_fsync_always() -> None:
    values = yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert config["jetstream"]["merge"]["sync_interval"] == "always"


def test_every_chart_has_deploy_values() -> None:
    files = {path.name for path in (DEPLOY / "aws").glob("values-*.yaml")}
    assert files == {"values-common.yaml", *(f"values-{chart}.yaml" for chart in CHART_NAMES)}


@pytest.mark.parametrize(
    ("chart", "values", "message"),
    [
        ("intake", {"env": {"PLATFORM_EVENTS_REPLICAS": 3}}, "must be a quoted string"),
        ("intake", {"env": {"PLATFORM_HEALTH_ADDRESS": "127.0.0.1:9101"}}, "is set by the chart"),
        ("gateway", {"env": {"PLATFORM_ADDRESS": "127.0.0.1:8080"}}, "is set by the chart"),
        ("intake", {"terminationGracePeriodSeconds": 20}, "must exceed PLATFORM_SHUTDOWN_TIMEOUT_SECONDS"),
        ("git-publisher", {"gitRepo": {"persistence": {"enabled": True}}}, "one ReadWriteOnce volume"),
        ("gateway", {"migration": {"enabled": True}}, "owns no schema"),
        (
            "intake",
            {"natsIdentity": {"existingSecret": "nats-intake"}},
            "migration.natsIdentity.existingSecret is required",
        ),
        (
            "cluster-bootstrapper",
            {"serviceAccount": {"automountToken": False}},
            "automountToken must be true",
        ),
        ("policy", {"secrets": {"existingSecret": ""}}, "set secrets.existingSecret"),
        ("policy", {"secrets": {"env": {"PLATFORM_POSTGRES_DSN": None, "PLATFORM_X": "k"}}}, "must be a map"),
    ],
)
def test_inconsistent_values_do_not_render(
    loaded_charts: Charts, chart: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(loaded_charts[chart], values)
