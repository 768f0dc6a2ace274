"""Intake's idea of where an environment lives matches what the renderer writes, byte for
byte: a teardown of a request whose render intake has not seen yet removes what was rendered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from libs import environment_layout
from services.renderer.domain import layout

LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
REQUEST_ID = st.from_regex(r"req-[0-9a-f]{16}", fullmatch=True)
REGION = st.sampled_from(["us-east-1", "us-west-2", "eu-central-1"])


@given(region=REGION, team=LABEL, app=LABEL, request_id=REQUEST_ID)
def test_intake_and_the_renderer_agree(region: str, team: str, app: str, request_id: str) -> None:
    assert environment_layout.gitops_path(region, team, app, request_id) == layout.gitops_path(
        region, team, app, request_id
    )
    assert environment_layout.namespace_name(team, app, request_id) == layout.namespace_name(
        team, app, request_id
    )


def test_a_long_team_and_app_keep_the_id_suffix() -> None:
    name = environment_layout.namespace_name("t" * 40, "a" * 40, "req-0123456789abcdef")
    assert len(name) <= 63
    assert name.endswith("-89abcdef")
