"""`lorakit scores`, `leaderboard`, `compare` and `quota`; `scores` settles submissions left unconfirmed."""
from __future__ import annotations

import json
import shutil

import pytest

from lorakit_fixtures import COMPETITION, error_line, full_disk_after, one_document, push_pull


def test_second_version_scores_gap_leaderboard_quota_compare_logs(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    kit.state.score_hook = lambda content: ("0.85000", "0.84000")
    assert kit.run("submit", 1, "--wait")[0] == 0
    kit.state.score_hook = lambda content: ("0.86500", "0.86000")
    assert kit.run("submit", 2, "-m", "second", "--wait")[0] == 0

    code, out, err = kit.run("scores")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["PV", "v2"]  # best public and best validation, sorted by score
    assert "0.00500" in out and "0.01000" in out  # public-private gaps

    code, out, err = kit.run("leaderboard", "--top", "2", "--download", "lb")
    assert code == 0, err
    assert "top team" in out and "> " in out and "your rank: 2 (alice, 0.86500)" in out
    assert (kit.repo / "lb" / f"{COMPETITION}.zip").is_file()

    code, out, err = kit.run("quota")
    assert code == 0, err
    assert "10.50 h used, 19.50 h left of 30.00 h" in out and "v1" in out and "43.0 min" in out

    code, out, err = kit.run("compare", 1, 2)
    assert code == 0, err
    assert "agreement 100.00%" in out and "World" in out

    (kit.repo / "submissions" / "v2" / "submission.csv").write_text(
        "ID,Label\n" + "".join(f"{i},{(i * 7 + (i % 2)) % 4}\n" for i in range(8000)))
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0 and "agreement 50.00% (4,000 rows differ)" in out and "mean confidence" in out

    code, out, err = kit.run("logs", 2)
    assert code == 0 and "effective config:" in out and "epoch 1/1" in out and "stream_name" not in out


@pytest.mark.parametrize("processed", [True, False])
def test_submit_unconfirmed_is_recorded_and_resolved_by_scores(kit, monkeypatch, processed):
    push_pull(kit)
    kit.state.fail("CreateSubmission", 502, after=processed)
    kit.state.fail("ListSubmissions", 500, times=None)
    code, out, err = kit.run("submit", 1)
    assert code == 5
    line = error_line(err)
    assert "UNCONFIRMED" in line and "lorakit scores" in line
    assert len(kit.state.calls("CreateSubmission")) == 1 and len(kit.state.submissions) == int(processed)
    row = kit.row(1)
    assert row["pending_status"] == "UNCONFIRMED" and row["submission_ref"] == "" and row["pending_token"]

    code, out, err = kit.run("submit", 1)  # no blind resend by the user either: it looks for the token first
    assert code == 1 and "500" in error_line(err)
    assert len(kit.state.calls("CreateSubmission")) == 1

    kit.state.faults.clear()
    monkeypatch.setenv("LORAKIT_CONFIRM_S", "0")  # no grace for Kaggle to show it: not found is final at once
    code, out, err = kit.run("scores")
    assert code == 0, err
    row = kit.row(1)
    if processed:
        assert row["submission_ref"] == str(kit.state.submissions[0].ref) and row["submission_status"] == "PENDING"
        assert row["pending_token"] == "" and row["submission_token"] in kit.state.submissions[0].description
        code, out, err = kit.run("submit", 1)  # it reached Kaggle: a second one is asked for
        assert code == 6 and "--again" in error_line(err) and len(kit.state.calls("CreateSubmission")) == 1
    else:
        assert row["pending_status"] == "NOT_SUBMITTED" and "never reached Kaggle" in err
    assert kit.run("submit", 1, *(["--again"] if processed else []))[0] == 0


def test_full_disk_after_a_submission_is_settled_by_scores(kit, monkeypatch):
    push_pull(kit)
    with monkeypatch.context() as mp:
        full_disk_after(mp, kit, "CreateSubmission")
        code, out, err = kit.run("submit", 1)
    assert code == 1 and "lorakit scores records it by its token" in error_line(err)
    assert kit.row(1)["pending_status"] == "SENDING"
    code, out, err = kit.run("scores")
    assert code == 0, err
    row = kit.row(1)
    assert row["submission_ref"] == str(kit.state.submissions[0].ref) and row["pending_status"] == ""
    assert len(kit.state.calls("CreateSubmission")) == 1


def test_scores_marks_the_final_picks_and_warns_near_the_deadline_when_there_is_none(kit):
    from datetime import datetime, timedelta, timezone

    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    assert kit.run("submit", 1, "--wait")[0] == 0 and kit.run("submit", 2, "--wait")[0] == 0
    first = kit.state.submissions[0].ref
    kit.state.selected = {first}
    code, out, err = kit.run("scores", "--json")
    data = one_document(out)
    assert data["selected"] == [first] and data["selection_warning"] is None
    assert {s["ref"]: s["selected"] for s in data["submissions"]} == {first: True, first + 1: False}
    groups = [(c[2] or {}).get("group") for c in kit.state.calls("ListSubmissions")]
    assert "SUBMISSION_GROUP_SELECTED" in groups
    row = next(line for line in kit.run("scores")[1].splitlines() if str(first) in line)
    assert "S" in row.split()[0]

    kit.state.selected = set()
    soon = datetime.now(timezone.utc) + timedelta(days=3)
    kit.state.competition_info["deadline"] = soon.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    code, out, err = kit.run("scores")
    assert code == 0 and "warning: none of your submissions is selected for the private leaderboard and the " \
                         "deadline is in 3.0 days" in err and f"{COMPETITION}/submissions" in err
    kit.state.competition_info["deadline"] = (soon + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert "is selected" not in kit.run("scores")[2]  # weeks before the deadline: nothing to say yet


def test_leaderboard_asks_for_the_public_board_and_labels_the_download_as_what_kaggle_serves(kit):
    import zipfile

    code, out, err = kit.run("leaderboard", "--download", "lb")
    assert code == 0 and "the public leaderboard" in out
    assert all(c[2].get("overridePublic") is True for c in kit.state.calls("GetLeaderboard"))
    kit.state.private_leaderboard = [{"teamId": 13, "teamName": "private winner", "score": "0.87000"}]
    code, out, err = kit.run("leaderboard", "--download", "lb", "--json")
    data = one_document(out)
    assert [r["team_name"] for r in data["rows"]] == ["top team", "second team"]  # the public board, as labelled
    assert data["download_board"] == "private" and "the private leaderboard" in err
    names = zipfile.ZipFile(kit.repo / "lb" / f"{COMPETITION}.zip").namelist()
    assert names == [f"{COMPETITION}-privateleaderboard.csv"]


def test_scores_says_when_the_best_validation_candidate_is_noise(kit):
    kit.accuracy = lambda cfg, number: {4: 0.901, 8: 0.902, 16: 0.95}[cfg.lora_r]
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    assert kit.run("submit", 1)[0] == 0
    code, out, err = kit.run("scores")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.strip().startswith("noise:"))
    assert line.strip().startswith("noise: the 2,000 shared validation rows cannot tell v2 and v1 apart; roughly")
    assert json.loads(kit.run("scores", "--json")[1])["noise"] == line.strip()[len("noise: "):]
    push_pull(kit, "--set", "lora_r=16")  # clearly better: nothing to say
    assert json.loads(kit.run("scores", "--json")[1])["noise"] is None

    for version in (2, 3):  # a second clone: nothing pulled, the ledger's accuracies on their rows
        shutil.rmtree(kit.repo / "submissions" / f"v{version}")
    kit.accuracy = lambda cfg, number: 0.95
    push_pull(kit, "--set", "lora_r=16", "--set", "seed=7")
    shutil.rmtree(kit.repo / "submissions" / "v4")
    noise = json.loads(kit.run("scores", "--json")[1])["noise"]
    assert noise.startswith("v") and "validation accuracies" in noise and "on 2,000 rows" in noise
