"""`lorakit sync`: the ledger rebuilt or completed from Kaggle (every version's status, metrics.json and push record,
every submission matched to its version), never overwriting a row it cannot confirm."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess

import pytest

from kaggle_standin import StoredSubmission
from lorakit_fixtures import error_line, ledger_write, one_document, push, versions

NASTY = 'r=4: "quoted", \'\'\' and """ and a \\ back\\slash, ünïcödé ✓ \U0001F600\nsecond line\r\n\ttabbed'
# The columns a fresh clone's sync cannot rebuild as the first clone wrote them, and why.
DIFFER = {
    "pulled_at": "sync pulls nothing: the outputs stay on Kaggle until `lorakit pull N` (empty)",
    "sent_after": "the push's own bookkeeping, used only while a push is unsettled (empty)",
    "sender": "the send's own bookkeeping, used only while a push or submission is unsettled (empty)",
    "sent_at": "the send's own bookkeeping, used only while a push or submission is unsettled (empty)",
    "send_ends": "the send's own bookkeeping, used only while a push or submission is unsettled (empty)",
    "submitted_at": "the first clone wrote its own clock when it submitted; sync takes Kaggle's date",
    "docker_image": "Kaggle describes only a kernel's latest session: recorded as a run ends, never rebuilt (empty)",
    "machine_shape": "recorded with docker_image (empty)",
}


def git(repo, *argv):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *argv], cwd=repo, check=True,
                   capture_output=True)


def rows_of(path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def pushed_and_pulled(kit, message: str, *extra) -> int:
    push(kit, *extra, message=message)
    version = len(versions(kit))
    assert kit.run("status", version, "--wait")[0] == 0
    code, _, err = kit.run("pull", version)
    assert code == 0, err
    return version


def two_versions_one_submitted(kit) -> list:
    """v1 (NASTY message, clean git tree) and v2 (a dirty tree), both pulled; v1 submitted and scored."""
    (kit.repo / "notes.txt").write_text("one\n")
    git(kit.repo, "init", "-q")
    git(kit.repo, "add", ".")
    git(kit.repo, "commit", "-q", "-m", "first")
    pushed_and_pulled(kit, NASTY, "--set", "lora_r=4")
    (kit.repo / "notes.txt").write_text("two\n")
    pushed_and_pulled(kit, "r=8", "--set", "lora_r=8")
    assert kit.run("submit", 1, "--wait")[0] == 0
    return kit.rows()


def fresh_clone(kit, tmp_path, monkeypatch):
    """A copy of the repository without submissions/ (the ledger and the pulled folders), as the cwd."""
    clone = tmp_path / "clone"
    shutil.copytree(kit.repo, clone, ignore=shutil.ignore_patterns("submissions"))
    monkeypatch.chdir(clone)
    return clone


def test_sync_in_a_fresh_clone_rebuilds_the_rows_the_first_clone_wrote(kit, tmp_path, monkeypatch):
    first = two_versions_one_submitted(kit)
    assert first[0]["message"] == NASTY and re.fullmatch(r"[0-9a-f]{40}", first[0]["git_commit"])
    assert (first[0]["git_dirty"], first[1]["git_dirty"]) == ("false", "true")
    clone = fresh_clone(kit, tmp_path, monkeypatch)

    code, out, err = kit.run("sync")
    assert code == 0, err
    assert "v1       added" in out and "v2       added" in out and "wrote submissions/ledger.csv (2 added" in out
    rebuilt = rows_of(clone / "submissions" / "ledger.csv")
    assert [r["version"] for r in rebuilt] == ["1", "2"]
    for before, after in zip(first, rebuilt):
        assert list(after) == list(before)
        differ = {c for c in before if before[c] != after[c]}
        assert differ <= set(DIFFER), {c: (before[c], after[c]) for c in differ}
        assert after["pulled_at"] == after["sent_after"] == ""
        assert after["submitted_at"][:19] == before["submitted_at"][:19]  # the stand-in's clock is this one
    assert rebuilt[0]["public_score"] and rebuilt[0]["submission_status"] == "COMPLETE"
    assert rebuilt[0]["val_accuracy"] and rebuilt[0]["run_config_hash"] == rebuilt[0]["config_hash"]
    assert not (clone / "submissions" / "v1").exists()  # nothing pulled: `lorakit pull 1` fetches the outputs


def test_sync_twice_changes_nothing_the_second_time(kit, tmp_path, monkeypatch):
    two_versions_one_submitted(kit)
    before = kit.ledger.read_bytes()
    code, out, err = kit.run("sync")  # in the first clone: every row matches
    assert code == 0, err
    assert out.count("unchanged") >= 3 and "nothing to change in submissions/ledger.csv (0 added, 0 completed, " \
                                              "2 unchanged, 0 conflict)" in out
    assert kit.ledger.read_bytes() == before
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    assert kit.run("sync")[0] == 0
    synced = (clone / "submissions" / "ledger.csv").read_bytes()
    code, out, err = kit.run("sync", "--json")
    assert code == 0, err
    report = one_document(out)
    assert {c["action"] for c in report["versions"]} == {"unchanged"} and report["written"] is False
    assert [c["action"] for c in report["submissions"]] == ["unchanged"]
    assert (clone / "submissions" / "ledger.csv").read_bytes() == synced


def test_scores_and_sync_record_a_score_alike(kit):
    """A score with more digits than the ledger keeps: submit --wait, scores and sync write the same cells, so a
    sync after scores finds nothing to change (it once refreshed the score scores had written unrounded)."""
    kit.state.score_hook = lambda content: ("0.861234567", "0.85")
    two_versions_one_submitted(kit)
    assert kit.row(1)["public_score"] == "0.861235"
    assert kit.run("scores")[0] == 0
    before = kit.ledger.read_bytes()
    assert kit.row(1)["public_score"] == "0.861235" and kit.row(1)["private_score"] == "0.85"
    code, out, err = kit.run("sync", "--json")
    assert code == 0, err
    assert [c["action"] for c in one_document(out)["submissions"]] == ["unchanged"]
    assert kit.ledger.read_bytes() == before


def test_a_conflicting_row_is_reported_and_left_as_is(kit):
    two_versions_one_submitted(kit)
    rows = kit.rows()
    rows[1]["config_hash"] = "f" * 64  # v2 of this ledger says another config than Kaggle's v2
    rows[1]["message"] = ""
    rows[0]["message"] = ""  # v1 agrees: its empty message is completed
    ledger_write(kit, rows)
    code, out, err = kit.run("sync")
    assert code == 0, err
    line = next(line for line in err.splitlines() if line.startswith("lorakit: warning: v2"))
    assert "conflicts with the ledger: config_hash ffffffffffff in the ledger" in line and "left as is" in line
    assert re.search(r"v1\s+completed\s+message", out) and re.search(r"v2\s+conflict", out)
    after = kit.rows()
    assert after[1] == rows[1] and after[0]["message"] == NASTY


def test_sync_numbers_a_push_left_sending_and_adds_what_is_missing(kit):
    two_versions_one_submitted(kit)
    rows = kit.rows()
    provisional = {**rows[1], "version": "", "status": "SENDING", "val_accuracy": "", "run_minutes": ""}
    ledger_write(kit, [provisional])  # v2 recorded, then the command died; v1's row is gone
    code, out, err = kit.run("sync", "--json")
    assert code == 0, err
    report = one_document(out)
    assert [(c["version"], c["action"]) for c in report["versions"]] == [(1, "added"), (2, "completed")]
    assert set(report["versions"][1]["columns"]) == {"version", "status", "val_accuracy", "run_minutes"}
    after = kit.rows()
    assert [r["version"] for r in after] == ["1", "2"] and after[1]["status"] == "COMPLETE"
    assert after[1]["push_token"] == rows[1]["push_token"] and after[1]["val_accuracy"] == rows[1]["val_accuracy"]


def test_a_dry_run_reports_and_writes_nothing(kit, tmp_path, monkeypatch):
    two_versions_one_submitted(kit)
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    code, out, err = kit.run("sync", "--dry-run")
    assert code == 0, err
    assert "v1       added" in out and "dry run, nothing written to submissions/ledger.csv (2 added" in out
    assert not (clone / "submissions").exists()


def test_versions_pushed_before_the_push_record_show_it_unknown(kit, tmp_path, monkeypatch):
    pushed_and_pulled(kit, "old")
    stored = versions(kit)[0]  # as an older lorakit pushed it: a token line, no push record
    stored.text = re.sub(r'PUSH_RECORD_JSON = r"""\n.*?\n"""', 'PUSH_RECORD_JSON = r"""\n{}\n"""', stored.text,
                         flags=re.S)
    fresh_clone(kit, tmp_path, monkeypatch)
    code, out, err = kit.run("sync", "--json")
    assert code == 0, err
    version = one_document(out)["versions"][0]
    assert version["action"] == "added"
    assert set(version["unknown"]) == {"message", "git_commit", "git_dirty", "pushed_at", "accelerator"}
    assert "v1 carry no push record" in err
    row = rows_of("submissions/ledger.csv")[0]
    assert row["message"] == "" and row["push_token"] == kit.row(1)["push_token"]
    assert row["overrides"] == kit.row(1)["overrides"] and row["val_accuracy"] == kit.row(1)["val_accuracy"]


@pytest.mark.parametrize("record", ['{"message": ["not", "text"]}', "{'message': 1}",
                                    '__import__("os").system("touch pwned")'])
def test_a_damaged_push_record_is_data_never_code(kit, tmp_path, monkeypatch, record):
    pushed_and_pulled(kit, "one")
    stored = versions(kit)[0]
    stored.text = re.sub(r'PUSH_RECORD_JSON = r"""\n.*?\n"""', f'PUSH_RECORD_JSON = r"""\n{record}\n"""',
                         stored.text, flags=re.S)
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    code, out, err = kit.run("sync")
    assert code == 0, err
    assert "lorakit: warning: v1: its push record: the push record" in err and not (clone / "pwned").exists()
    assert rows_of("submissions/ledger.csv")[0]["message"] == ""


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_a_failed_read_writes_nothing(kit, tmp_path, monkeypatch, fault):
    rows = two_versions_one_submitted(kit)
    partial = ledger_write(kit, rows[:1])  # v2's row gone: sync would add it
    for method in ("ListSubmissions", "/files/"):  # the last read, and a metrics.json download
        if fault == "500":
            kit.state.fail(method, 500, times=None)
        else:
            kit.state.drop(method, times=None)
        code, out, err = kit.run("sync")
        assert code == 1, err
        line = error_line(err)
        assert ("500" in line) if fault == "500" else ("could not reach Kaggle" in line), line
        assert kit.ledger.read_bytes() == partial
        kit.state.faults.clear()
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    kit.state.fail("GetKernelSessionStatus", 500, times=None)
    code, out, err = kit.run("sync", "--json")
    assert code == 1 and one_document(out)["exit_code"] == 1
    assert not (clone / "submissions").exists()


def test_a_corrupt_ledger_is_refused_before_any_call(kit):
    push(kit)
    kit.ledger.write_text("version,message\n1,a,b\n", encoding="utf-8")
    calls = len(kit.state.requests)
    for argv in (("sync",), ("sync", "--dry-run")):
        code, out, err = kit.run(*argv)
        assert code == 1 and "is corrupted: line 2 has 3 fields" in error_line(err)
    assert kit.ledger.read_text() == "version,message\n1,a,b\n" and len(kit.state.requests) == calls


def test_a_kernel_kaggle_does_not_have_is_one_line(kit):
    code, out, err = kit.run("sync", "--kernel", "alice/never-pushed")
    assert code == 7 and "Kaggle has no kernel alice/never-pushed" in error_line(err)
    assert not kit.ledger.exists()


def test_submissions_of_other_kernels_and_versions_are_left_out(kit):
    two_versions_one_submitted(kit)
    recorded = kit.state.submissions[0]
    for description in ("v9 alice/other-kernel lk-0123456789ab: theirs", "a hand-made file", "v7: lost",
                        f"v2 alice/{kit.slug} {'e' * 12} lk-00000000000e: another config"):
        kit.state.submissions.append(StoredSubmission(kit.state.next_ref, description, "submission.csv", b"",
                                                      recorded.date, ["COMPLETE"], "0.8"))
        kit.state.next_ref += 1
    code, out, err = kit.run("sync", "--json")
    assert code == 0, err
    actions = {c["ref"]: (c["version"], c["action"]) for c in one_document(out)["submissions"]}
    refs = [s.ref for s in kit.state.submissions]
    assert [actions[ref] for ref in refs] == [(1, "unchanged"), (9, "other"), (None, "other"), (7, "absent"),
                                              (2, "conflict")]
    assert "lorakit: warning: submission %d of v2 conflicts with the ledger: it names config_hash eeeeeeeeeeee" \
        % refs[4] in err
    assert kit.row(2)["submission_ref"] == ""


def test_a_metrics_json_cut_short_is_reported_and_its_columns_stay_empty(kit, tmp_path, monkeypatch):
    pushed_and_pulled(kit, "one")
    versions(kit)[0].outputs["metrics.json"] = b'{"val_accuracy": 0.9'
    fresh_clone(kit, tmp_path, monkeypatch)
    code, out, err = kit.run("sync")
    assert code == 0, err
    assert "lorakit: warning: v1: its metrics.json is not a JSON object (cut short?)" in err
    row = rows_of("submissions/ledger.csv")[0]
    assert row["val_accuracy"] == "" and row["message"] == "one" and row["status"] == "COMPLETE"


def test_a_sweeps_arms_get_their_sweep_id_back(kit, tmp_path, monkeypatch):
    kit.state.quota = {"timeUsed": "0s", "totalTimeAllowed": "360000s"}  # two arms of up to 11 h each fit
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--yes")
    assert code == 0, err
    first = kit.rows()
    assert first[0]["sweep_id"] and first[0]["sweep_id"] == first[1]["sweep_id"]
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    assert kit.run("sync")[0] == 0
    rebuilt = rows_of(clone / "submissions" / "ledger.csv")
    assert [r["sweep_id"] for r in rebuilt] == [r["sweep_id"] for r in first]


# -------------------------------------------------------------------- Kaggle's text is untrusted (issue 22)
def test_push_record_fields_are_checked_before_sync_stores_them(kit, tmp_path, monkeypatch):
    from lorakit.kernel import render_push_record

    pushed_and_pulled(kit, "fine")
    stored = versions(kit)[0]
    record = kit.kmod().read_push_record(stored.text)
    tampered = {**record, "message": "evil\x1b]0;title\x07", "config_hash": "x\x1b[2J", "sweep_id": "../../etc",
                "trainable_params": 1e300, "git_dirty": "yes"}
    stored.text = render_push_record(kit.kmod(), stored.text, tampered)
    fresh_clone(kit, tmp_path, monkeypatch)
    code, out, err = kit.run("sync")
    assert code == 0, err
    for key in ("message", "config_hash", "sweep_id", "trainable_params", "git_dirty"):
        assert f"lorakit: warning: v1: its push record's {key} is not what lorakit writes there: left empty" in err
    row = rows_of("submissions/ledger.csv")[0]
    assert (row["message"], row["sweep_id"], row["git_dirty"]) == ("", "", "")
    assert row["config_hash"] == "" and row["push_token"] == record["push_token"] and row["git_commit"] == ""
    assert row["trainable_params"] == row["trainable_params"].strip() and "1e+300" not in row["trainable_params"]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out + err)


def test_a_version_sync_cannot_read_is_listed_and_left_as_is(kit, tmp_path, monkeypatch):
    two_versions_one_submitted(kit)
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    kit.state.fail("GetKernel", 500, times=4, skip=1)  # v1's source, on each of its four attempts
    code, out, err = kit.run("sync")
    line = error_line(err)
    assert code == 1 and "1 version of" in line and "could not read v1" in line and "500" in line
    assert "lorakit: warning: could not read v1 (read the source of" in err and "run lorakit sync again" in err
    assert re.search(r"v1 +unreadable +could not read v1", out) and re.search(r"v2 +added", out)
    assert [r["version"] for r in rows_of(clone / "submissions" / "ledger.csv")] == ["2"]  # the rest is written
    kit.state.fail("GetKernel", 404, skip=1)  # v1's source gone: not "no such version"
    code, out, err = kit.run("sync", "--json")
    data = one_document(out)
    assert code == 1 and data["exit_code"] == 1 and data["versions"][0]["action"] == "unreadable"
    assert "could not read v1 (Kaggle answers 404 for its source)" in data["versions"][0]["detail"]
    assert "no such version" not in out + err


def test_kaggle_naming_v10_000_000_as_the_newest_is_refused_without_all(kit):
    push(kit)
    kit.state.newest_claimed = 10_000_000
    before = len(kit.state.calls("GetKernel"))
    code, out, err = kit.run("sync")
    line = error_line(err)
    assert code == 6 and "v10,000,000" in line and "at most 1,000 versions without --all" in line
    assert len(kit.state.calls("GetKernel")) == before + 1 and not kit.state.calls("GetKernelSessionStatus")


def test_the_version_walk_says_its_progress_on_stderr(kit, tmp_path, monkeypatch):
    push(kit)
    kit.state.newest_claimed = 50  # v2 to v50 answer 404: each listed as could not read
    code, out, err = kit.run("sync")
    assert code == 1 and "lorakit: sync: reading v25 of v50" in err and "lorakit: sync: reading v50 of v50" in err
    assert "49 versions of" in error_line(err) and re.search(r"v1 +unchanged", out)


def test_a_sweep_is_restored_from_its_arms_push_records_and_resumed_in_a_second_clone(kit, tmp_path, monkeypatch):
    kit.state.quota = {"timeUsed": "0s", "totalTimeAllowed": "360000s"}  # three arms of up to 11 h each fit
    kit.state.interrupt("GetKernelSessionStatus", skip=4)  # Ctrl-C while waiting for the second arm
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--yes")
    assert code == 130, err
    (recorded,) = (kit.repo / "submissions" / "sweeps").glob("sw-*.json")
    clone = fresh_clone(kit, tmp_path, monkeypatch)
    code, out, err = kit.run("sync", "--dry-run")
    assert code == 0 and f"would restore submissions/sweeps/{recorded.name}" in out
    assert not (clone / "submissions").exists()
    code, out, err = kit.run("sync", "--json")
    assert code == 0, err
    assert one_document(out)["sweeps"] == [f"submissions/sweeps/{recorded.name}"]
    restored = clone / "submissions" / "sweeps" / recorded.name
    assert json.loads(restored.read_text())["arms"] == json.loads(recorded.read_text())["arms"]
    code, out, err = kit.run("sweep", "--resume", recorded.stem)  # in the second clone
    assert code == 0, err
    assert len(versions(kit)) == 3 and len(kit.state.calls("SaveKernel")) == 3  # only the arm never pushed
    assert [r["sweep_id"] for r in rows_of(clone / "submissions" / "ledger.csv")] == [recorded.stem] * 3
    assert "ranked by validation accuracy" in out
    assert kit.run("sync", "--json")[0] == 0 and one_document(kit.run("sync", "--json")[1])["sweeps"] == []


def test_a_second_clone_shows_what_versions_shows_and_keeps_times_in_utc(kit, tmp_path, monkeypatch):
    two_versions_one_submitted(kit)
    kit.state.status_script, kit.state.failure_message = ["ERROR"], "CUDA out of memory"
    push(kit, "--set", "lora_r=2", message="fails")
    assert kit.run("status", 3)[0] == 3 and kit.run("pull", 3)[0] == 0  # it left its metrics.json
    first = one_document(kit.run("versions", "--json")[1])["versions"]
    fresh_clone(kit, tmp_path, monkeypatch)
    assert kit.run("sync")[0] == 0
    rows = rows_of("submissions/ledger.csv")
    assert rows[0]["submitted_at"].endswith("Z") and rows[0]["pushed_at"].endswith("Z")
    assert (rows[0]["val_rows"], rows[0]["train_minutes"], rows[0]["device"]) == ("2000", "20.0", "cuda:0 (Tesla T4)")
    assert rows[2]["failure_message"] == "CUDA out of memory"
    again = one_document(kit.run("versions", "--json")[1])["versions"]  # nothing pulled here
    for key in ("val_accuracy", "val_rows", "val_low", "val_high", "train_minutes", "device", "failure_message"):
        assert [r[key] for r in again] == [r[key] for r in first], key
