"""Which ``If-None-Match`` values name a representation's tag (RFC 9110's weak comparison), and
that a content tag follows the content, not the order a service sent its keys in."""

from __future__ import annotations

import pytest

from services.gateway.entrypoints.conditional import content_tag, tagged, version_tag


@pytest.mark.parametrize("if_none_match", ['"7"', 'W/"7"', '"3", "7"', ' "3" ,W/"7" ', "*"])
def test_a_header_naming_the_current_tag_answers_304_without_a_body(if_none_match: str) -> None:
    response = tagged({"version": 7}, version_tag(7), if_none_match)
    assert response.status_code == 304
    assert response.content is None
    assert response.headers["ETag"] == '"7"'


@pytest.mark.parametrize("if_none_match", [None, '"6"', '"77"', "7", 'W/"6", "8"'])
def test_any_other_header_answers_the_representation_with_its_tag(if_none_match: str | None) -> None:
    response = tagged({"version": 7}, version_tag(7), if_none_match)
    assert response.status_code == 200
    assert response.content == {"version": 7}
    assert response.headers["ETag"] == '"7"'


def test_a_content_tag_changes_with_the_content_only() -> None:
    assert content_tag({"a": 1, "b": [1, 2]}) == content_tag({"b": [1, 2], "a": 1})
    assert content_tag({"a": 1, "b": [1, 2]}) != content_tag({"a": 1, "b": [2, 1]})
    assert content_tag({"a": 1}) != content_tag({"a": 2})
