"""`lorakit status`: waiting and following a run, a failed run, and replies that are not a status."""
from __future__ import annotations

import json
import threading
import time

import pytest

from lorakit_fixtures import error_line, PORTAL, USERNAME, one_document, push, versions


def test_kernel_error_prints_failure_and_exits_nonzero(kit):
    kit.state.status_script = ["RUNNING", "ERROR"]
    kit.state.failure_message = "CUDA out of memory at epoch 1"
    push(kit)
    code, out, err = kit.run("status", "--wait")
    assert code == 3
    assert "failure message: CUDA out of memory at epoch 1" in out
    assert "v1 ended ERROR: CUDA out of memory" in err
    assert kit.row(1)["status"] == "ERROR"
    code, out, err = kit.run("status")
    assert code == 3 and "v1 ERROR" in out


def test_status_wait_times_out(kit, monkeypatch):
    kit.state.status_script = ["RUNNING"]
    push(kit)
    monkeypatch.setenv("LORAKIT_POLL_START_S", "0.05")
    code, out, err = kit.run("status", "--wait", "--timeout", "0.2")
    assert code == 4 and "still RUNNING" in err


def test_status_wait_follow_streams_the_log_then_reports_the_end(kit):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)

    def feed():  # once lorakit has seen the run RUNNING, however long it took to start
        deadline = time.monotonic() + 30
        while not kit.state.calls("GetKernelSessionStatus") and time.monotonic() < deadline:
            time.sleep(0.02)
        for text in ("effective config:\n", "epoch 1/1 val_accuracy 0.9000\n"):
            time.sleep(0.2)
            kit.state.log_feed(USERNAME, kit.slug, 1, text)
        time.sleep(0.2)
        kit.state.run_end(USERNAME, kit.slug, 1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    code, out, err = kit.run("status", 1, "--wait", "--follow", "--json")
    feeder.join()
    assert code == 0, err
    assert one_document(out) == {"version": 1, "status": "COMPLETE", "failure_message": None, "status_named": True,
                                 "push_problem": None}
    assert err.count("effective config:") == 1 and err.count("val_accuracy 0.9000") == 1  # under --json: stderr
    assert err.index("v1 RUNNING") < err.index("effective config:") < err.index("v1 COMPLETE")


@pytest.mark.parametrize("kind, said", [
    ("html", f"a web page, {PORTAL}"),
    ("empty", f"an empty reply (HTTP 200), {PORTAL}"),
    ("redirect", f"a redirect (HTTP 302 to http://portal.example/login), {PORTAL}"),
])
def test_a_status_reply_that_is_not_the_apis_json_is_one_line_and_never_recorded(kit, kind, said):
    push(kit)
    versions(kit)[0].statuses = ["COMPLETE"]  # a finished run: an odd reply must not read as QUEUED
    kit.state.odd("GetKernelSessionStatus", kind, times=None)
    for argv in (("status", 1), ("status", 1, "--wait"), ("pull", 1)):
        code, out, err = kit.run(*argv)
        assert code == 1 and error_line(err).endswith(said), (argv, err)
        assert "QUEUED" not in out + err and "Expecting value" not in err
    code, out, err = kit.run("status", 1, "--json")
    assert code == 1 and one_document(out) == {"error": error_line(err)[len("lorakit: error: "):], "exit_code": 1}
    assert kit.row(1)["status"] == "QUEUED" and kit.row(1)["pulled_at"] == ""  # as the push left it
    assert not [r for r in kit.state.requests if r[1] == "/login"]  # the redirect was not followed
    kit.state.faults.clear()
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 COMPLETE" in out and kit.row(1)["status"] == "COMPLETE"


def test_a_status_reply_without_a_status_reads_as_queued_and_is_never_recorded(kit):
    """Kaggle's JSON leaves out a field that holds its default, and QUEUED is the status's default: a real
    queued run may answer {}. It reads as QUEUED, as the client reads it, and is never written to the ledger."""
    push(kit)
    assert kit.row(1)["status"] == "QUEUED"  # as the push recorded it
    versions(kit)[0].statuses = ["COMPLETE"]
    kit.run("status", 1)  # the ledger now says COMPLETE
    assert kit.row(1)["status"] == "COMPLETE"
    kit.state.odd("GetKernelSessionStatus", "{}", times=None)
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 QUEUED (the reply named no status: not recorded)" in out
    assert kit.row(1)["status"] == "COMPLETE"
    code, out, err = kit.run("status", 1, "--json")
    assert code == 0 and json.loads(out)["status_named"] is False


def test_an_unknown_status_is_shown_as_unknown_and_not_recorded(kit):
    push(kit)
    versions(kit)[0].statuses = ["PREEMPTED"]
    for argv in (("status", 1), ("status", 1, "--wait"), ("logs", 1, "--follow")):
        code, out, err = kit.run(*argv)
        assert code == 1 and "unknown status 'PREEMPTED' from Kaggle" in error_line(err), (argv, err)
    assert kit.row(1)["status"] == "QUEUED"


def test_a_status_reply_with_a_failure_but_no_status_is_that_failure_unrecorded(kit):
    """A reply naming no status reads as QUEUED (the default), unless it carries a failure message: then it is
    shown as that failure, never recorded, and its text reaches the terminal without control characters."""
    push(kit)
    kit.state.odd("GetKernelSessionStatus", "failure-only", times=None)
    for argv in (("status", 1), ("status", 1, "--wait")):
        code, out, err = kit.run(*argv)
        assert code == 3 and error_line(err).endswith("v1 ended ERROR: CUDA out of memory"), (argv, err)
        assert "v1 ERROR (the reply named no status, but a failure: not recorded)" in out
        assert "QUEUED" not in out + err and "\x1b" not in out + err
    code, out, err = kit.run("status", 1, "--json")
    data = json.loads(out)
    assert code == 3 and data["failure_message"] == "CUDA out of memory\x1b[2J" and data["status_named"] is False
    assert "\x1b" not in out  # exact JSON: the escape written as \u001b
    assert kit.row(1)["status"] == "QUEUED"  # as the push left it


def test_the_next_step_follows_the_state_never_pull_what_is_pulled(kit):
    push(kit)
    code, out, err = kit.run("status", 1, "--wait")
    assert code == 0 and out.splitlines()[-1] == "next: lorakit pull 1"
    assert kit.run("pull", 1)[0] == 0
    code, out, err = kit.run("status", 1)
    assert code == 0 and "pull" not in out and out.splitlines()[-1] == "next: lorakit submit 1 --wait"
    assert kit.run("submit", 1)[0] == 0
    assert kit.run("status", 1)[1].splitlines()[-1] == "next: lorakit scores"


def test_an_error_version_is_named_with_its_reason_by_status_pull_and_submit(kit):
    kit.state.status_script, kit.state.failure_message = ["ERROR"], "CUDA out of memory"
    push(kit)
    code, out, err = kit.run("status", 1)
    assert code == 3 and error_line(err) == "lorakit: error: v1 ended ERROR: CUDA out of memory"
    assert kit.row(1)["failure_message"] == "CUDA out of memory"
    code, out, err = kit.run("submit", 1)
    assert code == 7 and error_line(err) == ("lorakit: error: v1 ended ERROR (CUDA out of memory): it has no "
                                             "submission to submit (its log: lorakit logs 1)")
    versions(kit)[0].outputs = {"log.txt": b"Traceback: CUDA out of memory\n"}  # all it left
    code, out, err = kit.run("pull", 1)
    assert code == 0 and "v1 ended ERROR (CUDA out of memory): pulling what it left" in err
    assert "has no metrics.json" not in err and "has no submission.csv" not in err and "next:" not in out
    code, out, err = kit.run("submit", 1)
    assert code == 7 and "v1 ended ERROR (CUDA out of memory): its run left no submission.csv" in error_line(err)
    assert not kit.state.calls("CreateSubmission")
