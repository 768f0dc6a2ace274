"""What intake's timeline keeps of an event, and how many entries fit in a page."""

from __future__ import annotations

import hashlib

import msgspec

from services.intake.domain.timeline import MAX_DATA_BYTES, MAX_TEXT_CHARS, fitting, stored_form

RENDERED = {
    "request_id": "req-0123456789abcdef",
    "generation": 3,
    "digest": "sha256:abc",
    "files": [
        {"name": "namespace.yaml", "content": "apiVersion: v1\nkind: Namespace\n"},
        {"name": "resourcequota.yaml", "content": "kind: ResourceQuota\n" * 200},
    ],
}


def test_a_bundle_is_kept_as_file_names_sizes_and_hashes() -> None:
    stored = stored_form(RENDERED)
    assert stored["digest"] == "sha256:abc"
    assert stored["files"] == [
        {
            "name": file["name"],
            "size_bytes": len(file["content"].encode()),
            "sha256": hashlib.sha256(file["content"].encode()).hexdigest(),
        }
        for file in RENDERED["files"]
    ]


def test_the_stored_form_of_a_stored_form_is_itself() -> None:
    # Rows written before are read through stored_form too: newer rows must come back unchanged.
    once = stored_form(RENDERED)
    assert stored_form(once) == once
    failed = {"request_id": "req-1", "error": "x" * (MAX_TEXT_CHARS * 2)}
    assert stored_form(stored_form(failed)) == stored_form(failed)


def test_long_text_is_cut_and_says_how_long_it_was() -> None:
    stored = stored_form({"error": "x" * 10_000, "nested": [{"value": "y" * 5000}]})
    note = "... [cut: 10000 characters in all]"
    assert stored["error"] == "x" * (MAX_TEXT_CHARS - len(note)) + note
    assert stored["nested"][0]["value"].endswith("[cut: 5000 characters in all]")


def test_data_still_too_large_keeps_only_what_identifies_it() -> None:
    drift = [{"field": f"f{n}", "expected": "a" * 100, "actual": "b" * 100} for n in range(500)]
    stored = stored_form(
        {"request_id": "req-1", "generation": 2, "commit_sha": "c0ffee", "drift_summary": drift}
    )
    assert stored == {
        "request_id": "req-1",
        "generation": 2,
        "commit_sha": "c0ffee",
        "truncated": True,
        "original_size_bytes": stored["original_size_bytes"],
    }
    assert stored["original_size_bytes"] > MAX_DATA_BYTES
    assert len(msgspec.json.encode(stored)) < 200


def test_a_page_takes_the_entries_that_fit_and_never_none() -> None:
    assert fitting([100, 100, 100], 250) == 2
    assert fitting([100, 100, 100], 300) == 3
    assert fitting([500, 100], 250) == 1  # one entry larger than the budget still moves on
    assert fitting([], 250) == 0
