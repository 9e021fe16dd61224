"""Two commands at once (issue 22): a push or a submission in flight names its sender, and no other command settles
it while that sender lives; a config whose push may have reached Kaggle, or a version already submitted, is not
sent again without --again. Real lorakit processes against the stand-in, which holds the request that matters
open until the test releases it; each test counts SaveKernel/CreateSubmission and checks that every version on
the stand-in is in the ledger."""
from __future__ import annotations

import csv
import signal
import subprocess
import time

import pytest

from lorakit_fixtures import error_line, full_disk_after, lorakit_started, push, push_pull, versions


def every_version_recorded(kit) -> None:
    """Each version the stand-in holds has its ledger row, the one whose push token is in its script."""
    rows = {int(r["version"]): r for r in kit.rows() if r["version"] and r["status"] != "NOT_PUSHED"}
    for version in versions(kit):
        row = rows.get(version.number)
        assert row is not None and row["push_token"] in version.text, (version.number, kit.rows())


def finished(proc: subprocess.Popen) -> tuple:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def seen(held) -> None:
    assert held.seen.wait(60), "the stand-in never saw the request"


def until(event) -> None:
    """Wait for ``event()`` to hold (the stand-in's state, changed by another thread)."""
    deadline = time.monotonic() + 60
    while not event():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def ledger_edit(kit, version, **cells) -> None:
    """Change cells of one row by hand (``version`` "" for the row not numbered yet)."""
    rows = kit.rows()
    for row in rows:
        if row["version"] == str(version):
            row.update(cells)
    with open(kit.ledger, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow  # real lorakit processes, each loading the kernel
def test_status_during_a_push_in_flight_leaves_it_to_its_sender(kit):
    held = kit.state.hold("SaveKernel", after=True)  # Kaggle made v1; its reply is on its way
    proc = lorakit_started(kit, "push", "-m", "in flight")
    seen(held)
    (row,) = kit.rows()
    assert row["status"] == "SENDING" and row["sender"].split()[1] == str(proc.pid) and row["sent_at"]
    code, out, err = kit.run("status")
    assert code == 7 and f"is being pushed by process {proc.pid}" in error_line(err)
    code, out, err = kit.run("versions")
    assert code == 0 and f"is being pushed by process {proc.pid}" in err
    code, out, err = kit.run("push", "-m", "the same config")
    assert code == 6 and f"is being pushed by process {proc.pid}" in error_line(err) and "--again" in err
    assert kit.rows()[0]["status"] == "SENDING" and kit.rows()[0]["version"] == ""  # left to its sender

    held.release()
    code, out, err = finished(proc)
    assert code == 0 and "pushed v1" in out, err
    assert len(kit.state.calls("SaveKernel")) == 1 and kit.row(1)["status"] == "QUEUED"
    every_version_recorded(kit)


@pytest.mark.slow  # real lorakit processes, each loading the kernel
def test_a_pusher_killed_after_kaggle_made_the_version_is_settled_and_never_pushed_twice(kit):
    held = kit.state.hold("SaveKernel", after=True)
    proc = lorakit_started(kit, "push", "-m", "killed")
    seen(held)
    proc.kill()  # SIGKILL: nothing recorded after SENDING
    proc.wait(timeout=60)
    held.release()
    code, out, err = kit.run("status")
    assert code == 0 and "v1 QUEUED" in out and "went through as v1" in err, err
    code, out, err = kit.run("push", "-m", "killed")
    assert code == 6 and error_line(err).startswith("lorakit: error: v1 already ran config_hash") and "--again" in err
    assert len(kit.state.calls("SaveKernel")) == 1 and len(versions(kit)) == 1
    every_version_recorded(kit)


def test_a_sender_on_another_machine_is_in_flight_until_its_send_ends(kit, monkeypatch):
    with monkeypatch.context() as mp:  # Kaggle made v1, and its row stays SENDING
        full_disk_after(mp, kit, "SaveKernel")
        assert kit.run("push", "-m", "elsewhere")[0] == 1
    ledger_edit(kit, "", sender="teammates-laptop 4242 -", send_ends="2999-01-01T00:00:00Z")  # a ledger from git
    code, out, err = kit.run("status")
    assert code == 7 and "is being pushed by process 4242 on teammates-laptop" in error_line(err)
    assert kit.rows()[0]["status"] == "SENDING"
    ledger_edit(kit, "", send_ends="2000-01-01T00:00:00Z")  # its send is over: looked for, and found
    code, out, err = kit.run("status")
    assert code == 0 and "v1 QUEUED" in out, err
    every_version_recorded(kit)


@pytest.mark.slow  # real lorakit processes, each loading the kernel
def test_a_lost_push_reply_while_another_push_lands_is_found_among_every_version(kit):
    held = kit.state.hold("SaveKernel", after=True, then="drop")  # v1 made, its reply lost
    proc = lorakit_started(kit, "push", "-m", "mine", "--set", "lora_r=4")
    seen(held)
    out, err = push(kit, "--set", "lora_r=8", message="another")  # lands meanwhile as v2
    assert "pushed v2" in out and "is being pushed by process" in err
    held.release()
    code, out, err = finished(proc)
    assert code == 0 and "pushed v1" in out and "went through as v1: not sent again" in err, err
    assert len(kit.state.calls("SaveKernel")) == 2 and len(versions(kit)) == 2
    assert kit.row(1)["message"] == "mine" and kit.row(2)["message"] == "another"
    every_version_recorded(kit)


@pytest.mark.slow  # real lorakit processes, each loading the kernel
def test_the_same_push_after_sigterm_is_confirmed_then_refused(kit, monkeypatch):
    held = kit.state.hold("SaveKernel")  # held before Kaggle processes it: it may yet arrive
    proc = lorakit_started(kit, "push", "-m", "terminated")
    seen(held)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finished(proc)
    assert code == 130 and "recorded as v1 UNCONFIRMED" in err, err
    monkeypatch.setenv("LORAKIT_CONFIRM_S", "600")  # Kaggle's side may still make it: not found is not final
    code, out, err = kit.run("push", "-m", "terminated")
    line = error_line(err)
    assert code == 6 and "is not found on Kaggle yet (UNCONFIRMED)" in line and "--again" in line
    code, out, err = kit.run("status", 1)
    assert code == 5 and "not found on Kaggle yet" in error_line(err) and kit.row(1)["status"] == "UNCONFIRMED"

    held.release()  # Kaggle processes the push its sender gave up on
    until(lambda: versions(kit))
    code, out, err = kit.run("push", "-m", "terminated")
    assert code == 6 and error_line(err).startswith("lorakit: error: v1 already ran config_hash")
    assert kit.row(1)["status"] == "QUEUED" and len(kit.state.calls("SaveKernel")) == 1
    every_version_recorded(kit)


@pytest.mark.slow  # real lorakit processes, each loading the kernel
def test_two_submits_at_once_make_one_submission(kit):
    push_pull(kit)
    limits = [kit.state.hold("GetSubmissionLimits") for _ in range(2)]  # both past their checks before sending
    create = kit.state.hold("CreateSubmission")
    first = lorakit_started(kit, "submit", 1)
    seen(limits[0])
    second = lorakit_started(kit, "submit", 1, "--again")  # --again or not: never two in flight at once
    seen(limits[1])
    limits[0].release()
    seen(create)  # the first recorded its submission under the ledger's lock, and sends it
    limits[1].release()
    code, out, err = finished(second)
    assert code == 6 and f"is being submitted by process {first.pid}" in error_line(err), err
    create.release()
    code, out, err = finished(first)
    assert code == 0 and "submitted v1 as submission" in out, err
    assert len(kit.state.calls("CreateSubmission")) == 1 and len(kit.state.submissions) == 1
    row = kit.row(1)
    assert row["submission_ref"] == str(kit.state.submissions[0].ref) and row["pending_status"] == ""
    every_version_recorded(kit)


@pytest.mark.slow  # real lorakit processes, each loading the kernel
def test_scores_during_a_submit_leaves_it_in_flight(kit):
    push_pull(kit)
    create = kit.state.hold("CreateSubmission")
    proc = lorakit_started(kit, "submit", 1)
    seen(create)
    code, out, err = kit.run("scores")
    assert code == 0 and f"is being submitted by process {proc.pid}" in err, err
    assert kit.row(1)["pending_status"] == "SENDING"  # not NOT_SUBMITTED
    code, out, err = kit.run("submit", 1)
    assert code == 6 and f"is being submitted by process {proc.pid}" in error_line(err)
    create.release()
    code, out, err = finished(proc)
    assert code == 0, err
    assert len(kit.state.calls("CreateSubmission")) == 1
    code, out, err = kit.run("scores")
    assert code == 0 and kit.row(1)["submission_ref"] == str(kit.state.submissions[0].ref)
    every_version_recorded(kit)


def test_submit_twice_asks_for_again_and_pull_never_suggests_it(kit):
    push_pull(kit)
    code, out, err = kit.run("submit", 1, "--wait")
    assert code == 0, err
    code, out, err = kit.run("submit", 1, "--wait")
    line = error_line(err)
    assert code == 6 and "v1 is already submitted" in line and "COMPLETE" in line and "--again" in line
    assert len(kit.state.calls("CreateSubmission")) == 1
    code, out, err = kit.run("pull", 1)
    assert code == 0 and "lorakit submit" not in out + err and "next: lorakit scores" in out
    code, out, err = kit.run("submit", 1, "--again", "--wait")
    assert code == 0, err
    assert len(kit.state.calls("CreateSubmission")) == 2 and len(kit.state.submissions) == 2
    assert kit.row(1)["submission_ref"] == str(kit.state.submissions[1].ref)
    every_version_recorded(kit)
