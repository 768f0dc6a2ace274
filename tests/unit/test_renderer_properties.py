"""Properties of rendering for arbitrary valid names and arbitrary text values.

Whatever the names, labels and free-text fields, each rendered file is one YAML document
that reads back as exactly the intended object (no extra keys, objects or documents),
and every file path stays inside the request's directory.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.models import PackManifest
from libs.kubernetes_names import is_dns1123_label, label_key_problem, label_value_problem
from libs.settings import load_settings
from services.renderer.bootstrap import build_renderer
from services.renderer.domain.bundle import same_structure
from services.renderer.domain.yaml_values import block, flow
from services.renderer.settings import RendererSettings
from tests.support.seed_plans import seed_plan, seed_spec

pytestmark = pytest.mark.unit

PREFIX = "platform.example.com"
# Built once: hypothesis runs the test body many times and function fixtures would reset.
RENDERER = build_renderer(
    load_settings(RendererSettings, {"PLATFORM_GITOPS_REPO_URL": "https://git.example.com/g.git"})
)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
regions = st.from_regex(r"[a-z]{2}-[a-z]{2,9}-[0-9]", fullmatch=True) | dns_labels
request_ids = st.from_regex(r"req-[0-9a-f]{16}", fullmatch=True)
label_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
label_prefixes = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True)
label_keys = (
    st.one_of(label_names, st.builds(lambda prefix, name: f"{prefix}/{name}", label_prefixes, label_names))
    .filter(lambda key: label_key_problem(key) is None)
    .filter(lambda key: not key.startswith(f"{PREFIX}/"))
)
label_values = st.one_of(st.just(""), label_names).filter(lambda value: label_value_problem(value) is None)
free_text = st.text(min_size=1, max_size=40).filter(lambda text: text.strip() != "")


def parse_single(text: str) -> Any:
    documents = list(yaml.safe_load_all(text))
    assert len(documents) == 1
    return documents[0]


@PROPERTY_SETTINGS
@given(
    team=dns_labels,
    app=dns_labels,
    region=regions,
    request_id=request_ids,
    labels=st.dictionaries(label_keys, label_values, max_size=5),
    owner=free_text,
    revision=free_text,
    note=st.text(max_size=40),
)
def test_rendered_files_are_exactly_the_intended_objects(
    team: str,
    app: str,
    region: str,
    request_id: str,
    labels: dict[str, str],
    owner: str,
    revision: str,
    note: str,
) -> None:
    spec = seed_spec(
        "preview", team=team, app=app, region=region, labels=labels, owner=owner, revision=revision
    )
    plan = seed_plan(
        "preview",
        pack_metadata={"note": note},
        pack_manifests=[
            PackManifest(pack="notes", api_version="v1", kind="ConfigMap", name=app, data={"n": note})
        ],
    )
    bundle = RENDERER.render(request_id, 1, spec, plan)

    directory = f"clusters/{region}/teams/{team}/{app}/{request_id}"
    assert bundle.gitops_path == directory
    assert posixpath.normpath(directory) == directory
    for file in bundle.files:
        assert posixpath.normpath(posixpath.join(directory, file.name)).startswith(directory + "/")
        assert "/" not in file.name

    assert is_dns1123_label(bundle.namespace)
    assert bundle.namespace.endswith("-" + request_id[-8:])
    platform = {
        f"{PREFIX}/team": team,
        f"{PREFIX}/app": app,
        f"{PREFIX}/class": "preview",
        f"{PREFIX}/quota-profile": "small",
        f"{PREFIX}/request-id": request_id,
    }
    parsed = {file.name: parse_single(file.content) for file in bundle.files}
    assert list(parsed) == [
        "namespace.yaml",
        "resourcequota.yaml",
        "limitrange.yaml",
        "networkpolicy.yaml",
        "policypack.yaml",
        "argocd-application.yaml",
        f"pack-notes-configmap-{app}.yaml",
    ]
    assert parsed["namespace.yaml"] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": bundle.namespace,
            "labels": {**labels, **platform},
            "annotations": {f"{PREFIX}/owner": owner},
        },
    }
    for name in ("resourcequota.yaml", "limitrange.yaml", "networkpolicy.yaml", "policypack.yaml"):
        assert set(parsed[name]) == {
            "apiVersion",
            "kind",
            "metadata",
            "data" if name == "policypack.yaml" else "spec",
        }
        assert parsed[name]["metadata"] == {
            "name": parsed[name]["metadata"]["name"],
            "namespace": bundle.namespace,
            "labels": platform,
        }
    assert parsed["policypack.yaml"]["data"]["note"] == note
    assert parsed[f"pack-notes-configmap-{app}.yaml"] == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": app, "namespace": bundle.namespace, "labels": platform},
        "data": {"n": note},
    }
    application = parsed["argocd-application.yaml"]
    assert application["metadata"] == {
        "name": f"{team}-{app}-{request_id}",
        "namespace": "argocd",
        "labels": platform,
    }
    assert application["spec"]["sources"][0]["path"] == directory
    assert application["spec"]["sources"][1] == {
        "repoURL": "https://github.com/example/payments-api.git",
        "targetRevision": revision,
        "path": ".",
    }
    assert application["spec"]["destination"]["namespace"] == bundle.namespace


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(value=json_values)
def test_the_serializer_reads_back_exactly(value: Any) -> None:
    assert same_structure(yaml.safe_load(flow(value)), value)
    assert same_structure(yaml.safe_load("key:" + block(value, 2) + "\n"), {"key": value})
    assert (flow(value) + block(value, 2)).isascii()
