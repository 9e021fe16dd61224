"""Never spend what a user cannot get back (issue 14): every push and submission is recorded before it is
sent and settled by its token, whatever ends the command (SIGTERM, SIGHUP, a full disk, a held lock, a
message that is not UTF-8); the ledger is keyed by (kernel, version); smoke runs are not submitted; a config
already run is not pushed again by accident. Through the real kaggle client against the stand-in."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lorakit_fixtures import REPO, USERNAME, kaggle_imported, kit, push, push_pull  # noqa: F401

from lorakit import ledger as ledger_module  # noqa: E402


def versions(kit, slug=None) -> list:
    return kit.state.versions(USERNAME, slug or kit.slug)


def error_line(err: str, kind: str = "error") -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith(f"lorakit: {kind}:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def lorakit_started(kit, *argv) -> subprocess.Popen:
    """A real lorakit process (its own signal handlers), with a long request timeout: the test signals it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LORAKIT_TIMEOUT_S": "120", "LORAKIT_RETRY_TOTAL_S": "120"}
    return subprocess.Popen([sys.executable, "-m", "lorakit", *map(str, argv)], cwd=kit.repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signalled_in_flight(kit, proc: subprocess.Popen, held, signum: int) -> tuple:
    """Send ``signum`` once ``held()`` says the request is held open by the stand-in; (exit code, stderr)."""
    deadline = time.monotonic() + 60
    while not held():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.2)  # the request is read and held
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


SIGNALS = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


# ---------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum, processed", [(SIGNALS[0], True), (SIGNALS[-1], False)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_signal_during_a_push_leaves_a_row_the_next_command_settles(kit, signum, processed):
    kit.state.stall("SaveKernel", after=processed)
    proc = lorakit_started(kit, "push", "-m", "signalled")
    code, err = signalled_in_flight(kit, proc, lambda: versions(kit) if processed else kit.state.calls("SaveKernel"),
                                    signum)
    assert code == 130 and "interrupted while pushing; recorded as v1 UNCONFIRMED" in err, err
    row = kit.row(1)
    assert row["status"] == "UNCONFIRMED" and row["push_token"].startswith("lk-")
    assert len(versions(kit)) == int(processed)

    code, out, err = kit.run("status")
    if processed:
        assert code == 0 and "v1 QUEUED" in out and kit.row(1)["status"] == "QUEUED"
        assert row["push_token"] in versions(kit)[0].text
    else:
        assert code == 1 and "never reached Kaggle" in error_line(err) and kit.row(1)["status"] == "NOT_PUSHED"
    assert len(kit.state.calls("SaveKernel")) == 1  # settled without a second send


@pytest.mark.parametrize("signum, processed", [(SIGNALS[-1], True), (SIGNALS[0], False)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_signal_during_a_submission_leaves_a_row_the_next_submit_settles(kit, signum, processed):
    push_pull(kit)
    kit.state.stall("CreateSubmission", after=processed)
    proc = lorakit_started(kit, "submit", 1)
    code, err = signalled_in_flight(
        kit, proc, lambda: kit.state.submissions if processed else kit.state.calls("CreateSubmission"), signum)
    assert code == 130 and "interrupted while submitting" in err, err
    row = kit.row(1)
    assert row["pending_status"] == "UNCONFIRMED" and row["pending_token"] and row["submission_ref"] == ""

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
    kit.state.fail("CreateSubmission", 502, after=True)
    kit.state.fail("ListSubmissions", 500, times=None)
    code, out, err = kit.run("submit", 1, "-m", "again")
    assert code == 5 and "UNCONFIRMED" in error_line(err)
    row = kit.row(1)
    assert row["pending_status"] == "UNCONFIRMED" and row["pending_token"] in kit.state.submissions[1].description
    assert [row[c] for c in ("submission_ref", "submission_status", "public_score")] == [
        before[c] for c in ("submission_ref", "submission_status", "public_score")]
    kit.state.faults.clear()
    assert kit.run("scores")[0] == 0
    assert kit.row(1)["submission_ref"] == str(kit.state.submissions[1].ref) and kit.row(1)["pending_status"] == ""
    assert len(kit.state.calls("CreateSubmission")) == 2 and len(kit.state.submissions) == 2


# ---------------------------------------------------------------------------- write errors after sending
def full_disk_after(monkeypatch, kit, method: str) -> None:
    """Every ledger write fails with ENOSPC once ``method`` has been sent."""
    write = ledger_module.Ledger._write

    def failing(self, columns, records):
        if kit.state.calls(method):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(self, columns, records)

    monkeypatch.setattr(ledger_module.Ledger, "_write", failing)


def test_full_disk_after_a_push_leaves_it_sending_and_the_retry_does_not_resend(kit, monkeypatch):
    with monkeypatch.context() as mp:
        full_disk_after(mp, kit, "SaveKernel")
        code, out, err = kit.run("push", "-m", "full disk")
    assert code == 1
    line = error_line(err)
    assert "No space left on device" in line and "stays SENDING" in line and "do not push it again" in line
    (row,) = kit.rows()
    assert row["status"] == "SENDING" and row["version"] == "" and row["push_token"] in versions(kit)[0].text

    code, out, err = kit.run("push", "-m", "full disk")  # the obvious retry finds it first
    assert code == 2 and "v1 already ran config_hash" in error_line(err) and "--again" in err
    assert len(kit.state.calls("SaveKernel")) == 1
    assert kit.row(1)["status"] == "QUEUED" and kit.row(1)["message"] == "full disk"


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


# ------------------------------------------------------------------------------ checked before sending
def test_a_held_ledger_lock_refuses_before_sending(kit, monkeypatch):
    from filelock import FileLock

    push_pull(kit)
    monkeypatch.setattr(ledger_module, "LOCK_WAIT_S", 0.5)
    with FileLock(str(kit.ledger) + ".lock"):
        start = time.monotonic()
        code, out, err = kit.run("push", "-m", "locked", "--set", "lora_r=4")
        assert code == 1 and "is locked by another lorakit command" in error_line(err)
        code, out, err = kit.run("submit", 1)
        assert code == 1 and "is locked by another lorakit command" in error_line(err)
        assert time.monotonic() - start < 15
    assert not kit.state.calls("SaveKernel")[1:] and not kit.state.calls("CreateSubmission")
    assert [r["version"] for r in kit.rows()] == ["1"]


def test_a_message_that_is_not_utf8_is_refused_before_sending(kit):
    message = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such a byte in argv
    code, out, err = kit.run("push", "-m", message)
    assert code == 1 and "not UTF-8" in error_line(err)
    assert not kit.state.requests and not kit.ledger.exists()
    push_pull(kit)
    code, out, err = kit.run("submit", 1, "-m", message)
    assert code == 1 and "not UTF-8" in error_line(err) and not kit.state.calls("StartSubmissionUpload")


# ------------------------------------------------------------------------------------- (kernel, version)
def test_two_kernels_keep_their_own_v1(kit):
    push_pull(kit, "--set", "lora_r=4")
    assert kit.run("submit", 1, "--wait")[0] == 0
    other = f"{USERNAME}/second-kernel"
    code, out, err = kit.run("push", "-m", "other", "--kernel", other)
    assert code == 0 and f"pushed v1 of {other}" in out and "replaced" not in err
    mine, theirs = sorted(kit.rows(), key=lambda r: r["kernel_ref"] != f"{USERNAME}/{kit.slug}")
    assert mine["message"] == "baseline" and mine["submission_ref"] and mine["public_score"]
    assert theirs["kernel_ref"] == other and theirs["message"] == "other" and theirs["version"] == "1"

    assert kit.run("status", 1, "--kernel", other, "--wait")[0] == 0
    asked = kit.state.calls("GetKernelSessionStatus")[-1][2]
    assert (asked["userName"], asked["kernelSlug"]) == (USERNAME, "second-kernel")
    code, out, err = kit.run("pull", 1, "--kernel", other)
    assert code == 0, err
    assert (kit.repo / "submissions" / "second-kernel" / "v1" / "submission.csv").is_file()
    code, out, err = kit.run("submit", 1, "--kernel", other)
    assert code == 0, err
    assert kit.state.submissions[-1].description.startswith(f"v1 {other} ")
    code, out, err = kit.run("scores", "--json")
    data = json.loads(out)
    assert {(s["kernel"], s["version"]) for s in data["submissions"]} == {
        (f"{USERNAME}/{kit.slug}", 1), (other, 1)}
    assert all(r["submission_ref"] for r in kit.rows())


def test_an_old_ledger_is_migrated_in_place_without_loss(kit):
    old_columns = ["version", "pushed_at", "message", "overrides", "config_hash", "kernel_ref", "push_token",
                   "status", "val_accuracy", "submission_ref", "submission_status", "public_score"]
    kit.ledger.parent.mkdir()
    kit.ledger.write_text(",".join(old_columns) + "\n"
                          "1,2025-04-01T00:00:00Z,scored,{},abc,,,COMPLETE,0.91,50000001,COMPLETE,0.8612\n",
                          encoding="utf-8")
    code, out, err = kit.run("push", "-m", "other", "--kernel", f"{USERNAME}/second-kernel")
    assert code == 0, err
    rows = {r["kernel_ref"]: r for r in kit.rows()}
    old = rows[kit.metadata["id"]]  # the metadata's kernel, written in
    assert (old["version"], old["message"], old["submission_ref"], old["public_score"]) == (
        "1", "scored", "50000001", "0.8612")
    assert rows[f"{USERNAME}/second-kernel"]["version"] == "1"
    kit.run("status", 1)  # the old row is the main kernel's v1: that is the kernel asked about
    assert kit.state.calls("GetKernelSessionStatus")[-1][2]["kernelSlug"] == kit.slug


def test_a_ledger_saved_with_a_bom_is_read_and_written_without_one(kit):
    push(kit)
    kit.ledger.write_bytes(b"\xef\xbb\xbf" + kit.ledger.read_bytes())
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 QUEUED" in out, err
    assert not kit.ledger.read_bytes().startswith(b"\xef\xbb\xbf") and kit.row(1)["status"] == "QUEUED"


# ----------------------------------------------------------------------------------------- smoke runs
def test_a_smoke_run_is_not_submitted_without_allow_smoke(kit):
    push_pull(kit, "--set", "smoke=true")
    code, out, err = kit.run("submit", 1)
    line = error_line(err)
    assert code == 2 and "predicted on synthetic smoke data" in line and "--allow-smoke" in line
    assert not kit.state.calls("StartSubmissionUpload") and not kit.state.calls("CreateSubmission")
    code, out, err = kit.run("submit", 1, "--allow-smoke")
    assert code == 0 and len(kit.state.submissions) == 1, err
    code, out, err = kit.run("scores", "--json")
    data = json.loads(out)
    assert data["best_public"] is None and data["best_validation"] is None
    assert data["not_candidates"][0]["version"] == 1 and "v1 is not a candidate" in err


def test_run_submit_of_a_smoke_config_is_refused_before_pushing(kit):
    code, out, err = kit.run("run", "-m", "x", "--submit", "--set", "smoke=true")
    assert code == 2 and "--allow-smoke" in error_line(err) and not kit.state.calls("SaveKernel")


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
        assert code == 2 and "synthetic smoke data" in error_line(err) and not kit.state.submissions


# ------------------------------------------------------------------------------------ GPU runs and quota
def test_a_config_already_run_to_complete_needs_again(kit):
    push_pull(kit)
    code, out, err = kit.run("push", "-m", "same")
    line = error_line(err)
    assert code == 2 and line.startswith("lorakit: error: v1 already ran config_hash") and "--again" in line
    assert len(kit.state.calls("SaveKernel")) == 1
    out, err = push(kit, "--again", message="same")
    assert "pushed v2" in out


def test_a_run_longer_than_the_quota_left_is_warned_before_pushing(kit):
    kit.state.quota = {"timeUsed": "100800s", "totalTimeAllowed": "108000s"}  # 2 h left
    out, err = push(kit)
    assert "lorakit: warning: the run may take up to 11.0 h (time_limit_minutes 660), but 2.0 h of GPU quota" in err
    kit.state.quota = {"timeUsed": "0s", "totalTimeAllowed": "108000s"}
    out, err = push(kit, "--set", "lora_r=4")
    assert "GPU quota" not in err
    kit.state.fail("GetAcceleratorQuotaStatistics", 500, times=None)
    out, err = push(kit, "--set", "lora_r=2")
    assert "pushed v3" in out and "note: could not read the GPU quota" in err and "lorakit: error" not in err


# ------------------------------------------------------------------------------------------- dry runs
@pytest.mark.parametrize("folder", ["kernel", ".", "sub/.."])
def test_a_build_dir_over_the_sources_is_refused(kit, folder):
    before = (kit.repo / "kernel" / "agnews_lora.py").read_bytes(), (kit.repo / "kernel-metadata.json").read_bytes()
    code, out, err = kit.run("push", "-m", "x", "--dry-run", "--build-dir", folder, "--set", "lora_r=4")
    assert code == 1 and "would overwrite" in error_line(err)
    assert before == ((kit.repo / "kernel" / "agnews_lora.py").read_bytes(),
                      (kit.repo / "kernel-metadata.json").read_bytes())


def test_a_dry_run_leaves_no_temporary_folder(kit, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code, out, err = kit.run("push", "-m", "x", "--dry-run")
    assert code == 0 and "nothing pushed" in out and not list(scratch.iterdir())


def test_a_predict_from_dry_run_counts_the_adapters_config(kit):
    push_pull(kit, "--set", "lora_r=4")
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["trainable_params"] == int(kit.row(1)["trainable_params"])
    code, out, err = kit.run("check", "--json")
    assert json.loads(out)["trainable_params"] != int(kit.row(1)["trainable_params"])


def test_a_push_over_the_competitions_rule_names_it(kit):
    """A budget raised above 1,000,000 is for experiments: the push goes ahead and says the entry is invalid."""
    code, out, err = kit.run("push", "-m", "big", "--set", "param_budget=2000000", "--set", "lora_r=40")
    assert code == 0, err
    assert ("param_budget 2,000,000 is above the competition's rule of at most 1,000,000 trainable parameters; "
            "this config breaks it: not a valid entry") in err
    code, out, err = kit.run("push", "-m", "small", "--set", "lora_r=4")
    assert code == 0 and "competition's rule" not in err
