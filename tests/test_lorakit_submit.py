"""`lorakit submit`: the checks before uploading (a valid file, no smoke run, submissions left), and never a duplicate
or an unrecorded submission."""
from __future__ import annotations

import json

import pytest

from lorakit_fixtures import (
    SIGNALS,
    USERNAME,
    error_line,
    lorakit_started,
    push_pull,
    signalled_in_flight,
)


def test_invalid_csv_is_refused_before_any_upload(kit):
    push_pull(kit)
    csv_path = kit.repo / "submissions" / "v1" / "submission.csv"
    csv_path.write_text("ID,Label\n0,1\n1,7\n")
    before = len(kit.state.requests)
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "rows, expected 8000" in err
    assert len(kit.state.requests) == before  # no limits call, no upload
    code, out, err = kit.run("validate", csv_path)
    assert code == 1 and "submission.csv" in err
    code, out, err = kit.run("validate", csv_path, "--rows", "2")
    assert code == 1 and "Label must be 0-3" in err


def test_submit_without_pull_and_validate_ok(kit):
    code, out, err = kit.run("submit", 3)
    assert code == 7 and "run lorakit pull 3 first" in err
    push_pull(kit)
    code, out, err = kit.run("validate", "submissions/v1/submission.csv")
    assert code == 0 and "valid submission (8000 rows" in out


def test_zero_submissions_left_refuses(kit):
    push_pull(kit)
    kit.state.allowed_now = 0
    code, out, err = kit.run("submit", 1)
    assert code == 6 and "no submissions left today" in err
    assert not kit.state.calls("StartSubmissionUpload") and not kit.state.calls("CreateSubmission")


def test_submission_scoring_error(kit):
    push_pull(kit)
    kit.state.submission_script = ["PENDING", "ERROR"]
    code, out, err = kit.run("submit", 1, "--wait")
    assert code == 3 and "failed to score" in err
    assert kit.row(1)["submission_status"] == "ERROR"


def test_upload_failure_is_reported(kit):
    push_pull(kit)
    kit.state.fail("/upload/", 400, times=None)
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "upload" in err and "nothing was submitted" in err
    assert not kit.state.calls("CreateSubmission")


def test_an_unknown_submission_status_is_one_line_and_not_recorded(kit):
    push_pull(kit)
    kit.state.submission_script = ["WEIRD"]
    code, out, err = kit.run("submit", 1)
    assert code == 0, err
    code, out, err = kit.run("scores")
    assert code == 1 and "unknown value 'WEIRD' from Kaggle" in error_line(err)
    assert kit.row(1)["submission_status"] == "PENDING"


def test_a_smoke_run_is_not_submitted_without_allow_smoke(kit):
    push_pull(kit, "--set", "smoke=true")
    code, out, err = kit.run("submit", 1)
    line = error_line(err)
    assert code == 6 and "predicted on synthetic smoke data" in line and "--allow-smoke" in line
    assert not kit.state.calls("StartSubmissionUpload") and not kit.state.calls("CreateSubmission")
    code, out, err = kit.run("submit", 1, "--allow-smoke")
    assert code == 0 and len(kit.state.submissions) == 1, err
    code, out, err = kit.run("scores", "--json")
    data = json.loads(out)
    assert data["best_public"] is None and data["best_validation"] is None
    assert data["not_candidates"][0]["version"] == 1 and "v1 is not a candidate" in err


@pytest.mark.parametrize("old", ["config smoke", "ledger smoke", "unknown"])
def test_runs_from_before_predicted_on_fall_back_to_their_config(kit, old):
    push_pull(kit, *(["--set", "smoke=true"] if old == "ledger smoke" else []))
    path = kit.repo / "submissions" / "v1" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["predicted_on"]
    metrics["config"] = {"smoke": True} if old == "config smoke" else {}
    path.write_text(json.dumps(metrics))
    code, out, err = kit.run("submit", 1)
    if old == "unknown":
        assert code == 0 and "cannot tell what v1 predicted on" in err
    else:
        assert code == 6 and "synthetic smoke data" in error_line(err) and not kit.state.submissions


def test_submit_processed_then_502_counts_once(kit):
    push_pull(kit)
    kit.state.fail("CreateSubmission", 502, after=True)
    code, out, err = kit.run("submit", 1)
    assert code == 0, err
    assert len(kit.state.calls("CreateSubmission")) == 1 and len(kit.state.submissions) == 1
    assert "(3 left today)" in out and kit.state.allowed_now == 3
    sub = kit.state.submissions[0]
    row = kit.row(1)
    assert row["submission_ref"] == str(sub.ref) and f"submission {sub.ref}" in out
    assert sub.description.startswith(f"v1 {USERNAME}/{kit.slug} {row['config_hash'][:12]}")
    assert row["submission_token"] in sub.description and row["pending_token"] == ""
    assert "went through as" in err


@pytest.mark.slow
@pytest.mark.parametrize("signum, processed", [(SIGNALS[-1], True), (SIGNALS[0], False)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_signal_during_a_submission_leaves_a_row_the_next_submit_settles(kit, monkeypatch, signum, processed):
    push_pull(kit)
    kit.state.stall("CreateSubmission", after=processed)
    proc = lorakit_started(kit, "submit", 1)
    code, err = signalled_in_flight(
        kit, proc, lambda: kit.state.submissions if processed else kit.state.calls("CreateSubmission"), signum)
    assert code == 130 and "interrupted while submitting" in err, err
    row = kit.row(1)
    assert row["pending_status"] == "UNCONFIRMED" and row["pending_token"] and row["submission_ref"] == ""

    monkeypatch.setenv("LORAKIT_CONFIRM_S", "0")  # no grace for Kaggle to show it: not found is final at once
    code, out, err = kit.run("submit", 1)
    assert code == 0, err
    assert len(kit.state.submissions) == 1 and kit.row(1)["submission_ref"] == str(kit.state.submissions[0].ref)
    assert kit.row(1)["pending_token"] == "" and kit.row(1)["pending_status"] == ""
    if processed:  # found by its token: not sent again
        assert "not sent again" in err and len(kit.state.calls("CreateSubmission")) == 1
        assert row["pending_token"] in kit.state.submissions[0].description
    else:  # it never reached Kaggle: sent once more, counted once
        assert len(kit.state.calls("CreateSubmission")) == 2


def test_an_unconfirmed_resubmission_keeps_the_previous_submission(kit):
    push_pull(kit)
    assert kit.run("submit", 1, "--wait")[0] == 0
    before = kit.row(1)
    code, out, err = kit.run("submit", 1, "-m", "again")  # submitted and scored: a second one asks for --again
    assert code == 6 and "v1 is already submitted" in error_line(err) and "--again" in err
    assert len(kit.state.calls("CreateSubmission")) == 1
    kit.state.fail("CreateSubmission", 502, after=True)
    kit.state.fail("ListSubmissions", 500, times=None)
    code, out, err = kit.run("submit", 1, "-m", "again", "--again")
    assert code == 5 and "UNCONFIRMED" in error_line(err)
    row = kit.row(1)
    assert row["pending_status"] == "UNCONFIRMED" and row["pending_token"] in kit.state.submissions[1].description
    assert [row[c] for c in ("submission_ref", "submission_status", "public_score")] == [
        before[c] for c in ("submission_ref", "submission_status", "public_score")]
    kit.state.faults.clear()
    assert kit.run("scores")[0] == 0
    assert kit.row(1)["submission_ref"] == str(kit.state.submissions[1].ref) and kit.row(1)["pending_status"] == ""
    assert len(kit.state.calls("CreateSubmission")) == 2 and len(kit.state.submissions) == 2
