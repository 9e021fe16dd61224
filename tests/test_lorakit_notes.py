"""`lorakit note` and `lorakit tag`: what you learnt about a version after the fact, in its ledger row, shown by
versions and compare, found by versions --where, and kept by sync (the ledger is the committed record)."""
from __future__ import annotations

import shutil

import pytest

from lorakit_fixtures import error_line, one_document, push, push_pull


def test_a_note_is_set_shown_replaced_and_cleared(kit):
    push_pull(kit)
    sent = len(kit.state.requests)
    code, out, err = kit.run("note", 1, "lr  looks\ttoo high\n(see the loss)")
    assert code == 0 and out == "v1: lr looks too high (see the loss)\n", err
    assert kit.row(1)["note"] == "lr looks too high (see the loss)"  # one line, in the ledger
    assert kit.run("note", "v1")[1] == "v1: lr looks too high (see the loss)\n"
    code, out, err = kit.run("note", 1, "bugged: wrong lr", "--json")
    assert code == 0 and one_document(out) == {"version": 1, "note": "bugged: wrong lr",
                                               "replaced": "lr looks too high (see the loss)"}
    code, out, err = kit.run("note", 1, "--clear")
    assert code == 0 and out == "v1: note removed\n(the note before: bugged: wrong lr)\n" and kit.row(1)["note"] == ""
    assert len(kit.state.requests) == sent  # offline: nothing sent
    assert kit.row(1)["status"] == "COMPLETE" and kit.row(1)["pulled_at"]  # the rest of the row as it was


def test_tags_are_added_removed_and_shown(kit):
    push_pull(kit)
    sent = len(kit.state.requests)
    assert kit.run("tag", 1, "final", "baseline")[1] == "v1: #final #baseline\n"
    assert kit.run("tag", 1, "final")[1] == "v1: #final #baseline\n"  # a tag once
    assert kit.row(1)["tags"] == "final,baseline"
    code, out, err = kit.run("tag", 1, "--remove", "baseline", "--json")
    assert code == 0 and one_document(out) == {"version": 1, "tags": ["final"]}
    assert kit.run("tag", 1)[1] == "v1: #final\n"
    assert len(kit.state.requests) == sent


@pytest.mark.parametrize("argv, code, words", [
    (("note", 9, "text"), 7, "v9 is not in the ledger"),
    (("tag", 9, "final"), 7, "v9 is not in the ledger"),
    (("note", 1, "   "), 2, "the note is empty: to remove a note, use --clear"),
    (("note", 1, "x", "--clear"), 2, "give a note or --clear, not both"),
    (("note", 1, "x" * 501), 2, "a note holds at most 500 characters"),
    (("tag", 1, "two words"), 2, "a tag is one word"),
    (("tag", 1, "--remove", "a/b"), 2, "a tag is one word"),
    (("note", "first", "x"), 2, "a version is a positive kernel version number"),
])
def test_bad_notes_and_tags_are_refused_and_change_nothing(kit, argv, code, words):
    push(kit)
    before = kit.ledger.read_bytes()
    got, out, err = kit.run(*argv)
    assert got == code and words in error_line(err), err
    assert kit.ledger.read_bytes() == before


def test_versions_and_compare_show_notes_and_tags_and_where_finds_them(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    assert kit.run("note", 2, "the keeper")[0] == 0 and kit.run("tag", 2, "final")[0] == 0
    code, out, err = kit.run("versions")
    assert "#final the keeper" in next(line for line in out.splitlines() if line.startswith("v2 "))
    code, out, err = kit.run("versions", "--where", "tag=final", "--json")
    (row,) = one_document(out)["versions"]
    assert (row["version"], row["note"], row["tags"]) == (2, "the keeper", ["final"])
    code, out, err = kit.run("versions", "--where", "note=KEEP")  # a part of the note, in any case
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["v2"]
    code, out, err = kit.run("compare", 1, 2)
    assert next(line for line in out.splitlines() if line.startswith("notes")).split() == ["notes", "-", "#final",
                                                                                            "the", "keeper"]
    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["b"]["note"] == "the keeper" and data["b"]["tags"] == ["final"] and data["a"]["tags"] == []


def test_notes_survive_sync_in_a_second_clone(kit, tmp_path, monkeypatch):
    push_pull(kit, "--set", "lora_r=4")
    kit.state.submission_script = ["PENDING"]  # scored later: the second clone's sync refreshes it
    assert kit.run("submit", 1)[0] == 0
    assert kit.run("note", 1, "bugged: the lr was wrong")[0] == 0 and kit.run("tag", 1, "bugged")[0] == 0
    clone = tmp_path / "clone"  # a git clone: the committed ledger, no pulled folders
    shutil.copytree(kit.repo, clone, ignore=shutil.ignore_patterns("v1"))
    kit.state.submissions[0].statuses = ["COMPLETE"]
    monkeypatch.chdir(clone)
    code, out, err = kit.run("sync")
    assert code == 0, err
    row = next(r for r in _rows(clone) if r["version"] == "1")
    assert row["submission_status"] == "COMPLETE" and row["public_score"]  # Kaggle's columns refreshed
    assert (row["note"], row["tags"]) == ("bugged: the lr was wrong", "bugged")  # yours kept
    code, out, err = kit.run("versions", "--where", "tags=bugged")
    assert "#bugged bugged: the lr was wrong" in out

    (clone / "submissions" / "ledger.csv").unlink()  # rebuilt from Kaggle alone: it has no notes to give
    assert kit.run("sync")[0] == 0
    assert next(r for r in _rows(clone) if r["version"] == "1")["note"] == ""


def _rows(repo) -> list:
    import csv

    with open(repo / "submissions" / "ledger.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
