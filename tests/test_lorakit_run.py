"""`lorakit run`: push -> wait -> pull -> submit in one command, and how to resume when it stops half way."""
from __future__ import annotations

import pytest

from lorakit_fixtures import error_line, one_document, versions


def test_run_submit_smoke_ends_with_a_scored_ledger_row(kit):
    code, out, err = kit.run("run", "--submit", "--allow-smoke", "-m", "x", "--set", "smoke=true", "--follow")
    assert code == 0, err
    assert kit.state.calls("SaveKernel")[0][2]["text"].count('"smoke": true') == 1
    for line in ("pushed v1 of alice/", "v1 RUNNING", "v1 COMPLETE", "pulled v1 into submissions/v1/",
                 "submitted v1 as submission 50000001", "scored: public 0.86120", "next: lorakit scores"):
        assert line in out, line
    assert out.count("effective config:") == 1  # the followed log, once
    row = kit.row(1)
    assert row["message"] == "x" and row["status"] == "COMPLETE" and float(row["val_accuracy"]) > 0
    assert row["submission_ref"] == "50000001" and row["submission_status"] == "COMPLETE"
    assert float(row["public_score"]) == pytest.approx(0.8612)


def test_run_refuses_no_run_before_any_network_call(kit):
    code, out, err = kit.run("run", "-m", "x", "--no-run")
    assert code == 2 and "lorakit push --no-run" in err and not kit.state.requests


def test_run_submit_of_a_smoke_config_is_refused_before_pushing(kit):
    code, out, err = kit.run("run", "-m", "x", "--submit", "--set", "smoke=true")
    assert code == 6 and "--allow-smoke" in error_line(err) and not kit.state.calls("SaveKernel")


def test_a_kaggle_error_after_the_push_says_how_to_resume(kit):
    kit.state.cut = {"submission.csv"}
    code, out, err = kit.run("run", "-m", "x", "--submit", "--json")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert "download of submission.csv failed" in line
    assert line.endswith("resume with: lorakit pull 1, then lorakit submit 1 --wait")
    data = one_document(out)  # what it did, then the error
    assert data["status"]["status"] == "COMPLETE" and "pull" not in data and data["exit_code"] == 1
    assert kit.row(1)["status"] == "COMPLETE" and kit.row(1)["pulled_at"] == ""


def test_ctrl_c_while_waiting_leaves_the_ledger_and_says_how_to_resume(kit):
    kit.state.status_script = ["QUEUED", "RUNNING"]
    kit.state.interrupt("GetKernelSessionStatus", skip=2)
    code, out, err = kit.run("run", "--submit", "-m", "x")
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (
        "lorakit: interrupted: interrupted while waiting for the run; the ledger is up to date; resume with: "
        "lorakit status 1 --wait, then lorakit pull 1, then lorakit submit 1 --wait")
    assert kit.row(1)["status"] == "RUNNING" and kit.row(1)["submission_status"] == ""
    versions(kit)[0].statuses = ["COMPLETE"]
    for argv in (("status", 1, "--wait"), ("pull", 1), ("submit", 1, "--wait")):
        code, out, err = kit.run(*argv)
        assert code == 0, err
    assert kit.row(1)["submission_status"] == "COMPLETE" and len(kit.state.submissions) == 1


def test_ctrl_c_while_pushing_records_the_push_unconfirmed(kit):
    kit.state.interrupt("SaveKernel", after=True)  # saved on Kaggle, the reply never seen
    code, out, err = kit.run("run", "-m", "x", "--json")
    assert code == 130
    line = err.strip().splitlines()[-1]
    assert "interrupted while pushing; recorded as v1 UNCONFIRMED" in line
    assert line.endswith("resume with: lorakit status 1 --wait, then lorakit pull 1")
    assert one_document(out) == {"error": line.split("interrupted: ", 1)[1], "exit_code": 130}
    assert kit.row(1)["status"] == "UNCONFIRMED" and len(versions(kit)) == 1
    code, out, err = kit.run("status", 1)  # the token finds the push: it went through
    assert code == 0 and "v1 QUEUED" in out and kit.row(1)["status"] == "QUEUED"


def test_run_names_the_same_next_step_as_pull(kit):
    def run_hook(text, number):
        files, log = kit.fake_run(text, number)
        if number == 1:
            files["submission.csv"] = b"ID,Label\n0,7\n"  # invalid: predict again from the adapter
        return files, log

    kit.state.run_hook = run_hook
    for sets, hint in ((("lora_r=4",), ["next: lorakit push --predict-from 1 -m MESSAGE"]),
                       (("smoke=true",), []),  # a smoke run's predictions are never submitted
                       ((), ["next: lorakit submit 3 --wait"])):
        argv = ["run", "-m", "x"] + [a for item in sets for a in ("--set", item)]
        code, out, err = kit.run(*argv)
        assert code == 0, err
        assert [line for line in (out + err).splitlines() if line.startswith("next:")] == hint, out + err
