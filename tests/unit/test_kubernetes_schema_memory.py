"""Remembered answers of the Kubernetes schema validation: only what the schemas cannot tell
apart shares an answer, and only valid answers are remembered."""

from __future__ import annotations

import copy
from typing import Any

from libs.kubernetes_schemas import KubernetesSchemas


def quota(name: str, namespace: str, team: str, pods: Any = "10") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": team}},
        "spec": {"hard": {"pods": pods}},
    }


def test_manifests_differing_only_in_metadata_strings_share_the_valid_answer() -> None:
    schemas = KubernetesSchemas("1.30.0")
    assert schemas.problems(quota("baseline", "payments-api-1", "payments")) == []
    assert schemas.problems(quota("baseline", "search-web-2", "search")) == []


def test_what_the_schemas_check_is_still_checked_after_a_valid_answer() -> None:
    schemas = KubernetesSchemas("1.30.0")
    assert schemas.problems(quota("baseline", "payments-api-1", "payments")) == []
    # A name of the wrong type, a label value of the wrong type, a spec that differs.
    wrong_name = quota("baseline", "payments-api-1", "payments")
    wrong_name["metadata"]["name"] = 7
    assert schemas.problems(wrong_name)
    wrong_label = copy.deepcopy(wrong_name)
    wrong_label["metadata"]["name"] = "baseline"
    wrong_label["metadata"]["labels"]["team"] = ["payments"]
    assert schemas.problems(wrong_label)
    assert schemas.problems(quota("baseline", "payments-api-1", "payments", pods={"n": 1}))


def test_an_invalid_answer_is_not_remembered_for_another_manifest() -> None:
    schemas = KubernetesSchemas("1.30.0")
    first = schemas.problems(quota("one", "ns-one", "payments", pods=[1]))
    second = schemas.problems(quota("two", "ns-two", "search", pods=[1]))
    assert first
    assert second
    assert not any("ns-one" in problem or problem == "one" for problem in second)
