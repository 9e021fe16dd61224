"""lorakit on a flaky Kaggle (issue 9): no duplicate pushes or submissions, no hangs, no lost pulls,
credentials as the kaggle client reads them. Every fault is injected into the stand-in server."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lorakit_fixtures import REPO, SECRET, USERNAME, kaggle_imported, kit, push, push_pull  # noqa: F401

TOKEN = "kgat_0123456789abcdef0123"  # an access token the stand-in knows (tests add it to state.tokens)




def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("lorakit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def versions(kit) -> list:
    return kit.state.versions(USERNAME, kit.slug)


# ------------------------------------------------------------------------------------- idempotent push
@pytest.mark.parametrize("fault", ["502", "drop", "stall"])
def test_push_processed_then_reply_lost_is_not_sent_again(kit, monkeypatch, fault):
    monkeypatch.setenv("LORAKIT_TIMEOUT_S", "0.5")
    if fault == "502":
        kit.state.fail("SaveKernel", 502, after=True)
    else:
        getattr(kit.state, fault)("SaveKernel", after=True)
    code, out, err = kit.run("push", "-m", "reply lost")
    assert code == 0, err
    assert len(kit.state.calls("SaveKernel")) == 1 and len(versions(kit)) == 1
    assert "pushed v1" in out and "went through as v1: not sent again" in err
    row = kit.row(1)
    assert row["status"] == "QUEUED" and row["push_token"].startswith("lk-")
    assert f"# lorakit push token: {row['push_token']}" in versions(kit)[0].text


def test_push_502_before_processing_is_sent_again_once(kit):
    kit.state.fail("SaveKernel", 502)
    code, out, err = kit.run("push", "-m", "x")
    assert code == 0, err
    assert len(kit.state.calls("SaveKernel")) == 2 and len(versions(kit)) == 1
    assert "checking whether it went through" in err and "pushed v1" in out


@pytest.mark.parametrize("status", [429, 400])
def test_push_and_submit_4xx_are_final(kit, status):
    kit.state.fail("SaveKernel", status, headers={"Retry-After": "0"})
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and str(status) in one_error_line(err)
    assert len(kit.state.calls("SaveKernel")) == 1 and not versions(kit) and kit.rows() == []

    push_pull(kit)
    kit.state.fail("CreateSubmission", status, headers={"Retry-After": "0"})
    code, out, err = kit.run("submit", 1)
    assert code == 1 and str(status) in one_error_line(err)
    assert len(kit.state.calls("CreateSubmission")) == 1 and not kit.state.submissions
    assert kit.row(1)["submission_status"] == "" and kit.row(1)["pending_status"] == ""


def test_push_unconfirmed_is_recorded_then_confirmed_by_status(kit):
    kit.state.fail("SaveKernel", 502, after=True)
    kit.state.fail("GetKernel", 500, times=None, skip=1)  # the read before the push works, the check does not
    code, out, err = kit.run("push", "-m", "x")
    assert code == 5
    line = one_error_line(err)
    assert "UNCONFIRMED" in line and "lorakit status 1" in line and "may have gone through" in line
    assert len(kit.state.calls("SaveKernel")) == 1 and len(versions(kit)) == 1  # never resent
    row = kit.row(1)
    assert row["status"] == "UNCONFIRMED" and row["push_token"] in versions(kit)[0].text

    kit.state.faults.clear()
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 QUEUED" in out, err
    assert kit.row(1)["status"] == "QUEUED"


def test_push_unconfirmed_that_another_push_overtook_is_found_by_its_token(kit):
    push(kit)
    kit.state.fail("SaveKernel", 502, after=True)
    kit.state.fail("GetKernel", 500, times=None, skip=1)
    code, out, err = kit.run("push", "-m", "mine", "--set", "lora_r=4")
    assert code == 5 and kit.row(2)["status"] == "UNCONFIRMED"
    kit.state.faults.clear()
    mine = versions(kit).pop()  # another push (the web editor, a teammate) took v2 just before mine: mine is v3
    other = dataclasses.replace(mine, text="# another push")
    mine.number = 3
    versions(kit).extend([other, mine])
    code, out, err = kit.run("status", 2)
    assert code == 1 and "went through as v3" in one_error_line(err) and "lorakit status 3" in err
    assert kit.row(3)["message"] == "mine" and kit.row(3)["status"] == "QUEUED" and len(kit.rows()) == 2
    assert len(kit.state.calls("SaveKernel")) == 2  # nothing sent again


def test_push_unconfirmed_that_never_arrived(kit):
    kit.state.fail("SaveKernel", 502)
    kit.state.fail("GetKernel", 500, times=None, skip=1)
    code, out, err = kit.run("push", "-m", "x")
    assert code == 5 and not versions(kit) and kit.row(1)["status"] == "UNCONFIRMED"

    kit.state.faults.clear()
    code, out, err = kit.run("pull", 1)
    assert code == 1 and "never reached Kaggle" in one_error_line(err)
    assert kit.row(1)["status"] == "NOT_PUSHED" and not (kit.repo / "submissions" / "v1").exists()
    out, err = push(kit, message="again")
    assert "pushed v1" in out and "row for v1; it is replaced" in err
    assert kit.row(1)["status"] == "QUEUED" and kit.row(1)["message"] == "again"


# --------------------------------------------------------------------------------------- idempotent submit
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


@pytest.mark.parametrize("processed", [True, False])
def test_submit_unconfirmed_is_recorded_and_resolved_by_scores(kit, processed):
    push_pull(kit)
    kit.state.fail("CreateSubmission", 502, after=processed)
    kit.state.fail("ListSubmissions", 500, times=None)
    code, out, err = kit.run("submit", 1)
    assert code == 5
    line = one_error_line(err)
    assert "UNCONFIRMED" in line and "lorakit scores" in line
    assert len(kit.state.calls("CreateSubmission")) == 1 and len(kit.state.submissions) == int(processed)
    row = kit.row(1)
    assert row["pending_status"] == "UNCONFIRMED" and row["submission_ref"] == "" and row["pending_token"]

    code, out, err = kit.run("submit", 1)  # no blind resend by the user either: it looks for the token first
    assert code == 1 and "500" in one_error_line(err)
    assert len(kit.state.calls("CreateSubmission")) == 1

    kit.state.faults.clear()
    code, out, err = kit.run("scores")
    assert code == 0, err
    row = kit.row(1)
    if processed:
        assert row["submission_ref"] == str(kit.state.submissions[0].ref) and row["submission_status"] == "PENDING"
        assert row["pending_token"] == "" and row["submission_token"] in kit.state.submissions[0].description
    else:
        assert row["pending_status"] == "NOT_SUBMITTED" and "never reached Kaggle" in err
    assert kit.run("submit", 1)[0] == 0


# -------------------------------------------------------------------------------------------- timeouts
@pytest.fixture
def scaled(monkeypatch):
    """The default budgets scaled down 100x: a stalled server must end a command within 1.8 s (3 min),
    plus a fixed allowance for Python's own time on a busy machine, which does not scale."""
    for name, value in (("LORAKIT_TIMEOUT_S", "0.3"), ("LORAKIT_RETRY_TOTAL_S", "1.5"), ("LORAKIT_CONFIRM_S", "0.6"),
                        ("LORAKIT_RETRY_BASE_S", "0.01"), ("LORAKIT_RETRY_MAX_DELAY_S", "0.6"),
                        ("LORAKIT_RETRY_ATTEMPTS", "6")):
        monkeypatch.setenv(name, value)
    return 1.8 + 1.5


@pytest.mark.parametrize(
    "where, argv",
    [
        ("ListSubmissions", ["scores"]),
        ("DownloadLeaderboard", ["leaderboard", "--download", "lb"]),
        ("/upload/", ["submit", "1"]),
        ("/files/", ["pull", "1"]),
        ("SaveKernel", ["push", "-m", "stalled"]),
    ],
)
def test_stalled_server_ends_in_one_clear_line(kit, scaled, where, argv):
    if argv[0] in ("submit", "pull"):
        push_pull(kit) if argv[0] == "submit" else push(kit)
        assert argv[0] == "submit" or kit.run("status", 1, "--wait")[0] == 0
    before = kit.ledger.read_bytes() if kit.ledger.exists() else None
    kit.state.stall(where, times=None)
    if where == "SaveKernel":
        kit.state.stall("GetKernel", times=None, skip=1)  # the check stalls too
    start = time.monotonic()
    code, out, err = kit.run(*argv)
    elapsed = time.monotonic() - start
    assert code in (1, 5) and elapsed < scaled, (elapsed, err)
    line = one_error_line(err)
    assert "did not answer in time" in line or "it may have gone through" in line, line
    if argv[0] == "submit":
        assert "nothing was submitted" in line and not kit.state.calls("CreateSubmission")
    if argv[0] == "pull":
        assert not (kit.repo / "submissions" / "v1").exists() and kit.ledger.read_bytes() == before
    if argv[0] == "push":
        assert code == 5 and kit.row(1)["status"] == "UNCONFIRMED"


def test_stalled_token_introspection_ends_in_one_clear_line(kit, scaled, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    kit.state.stall("IntrospectToken", times=None)
    start = time.monotonic()
    code, out, err = kit.run("scores")
    assert code == 1 and time.monotonic() - start < scaled
    assert "authenticate: Kaggle did not answer in time" in one_error_line(err) and TOKEN not in err


# ----------------------------------------------------------------------------------------------- pulls
def expected_files(kit, number=1) -> set:
    return set(versions(kit)[number - 1].outputs) | {"log.txt"}


def folder_files(folder) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_two_concurrent_pulls_never_report_a_partial_folder(kit):
    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    kit.state.slow = {"submission.csv": 2.5}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "lorakit", "pull", "1"]
    first = subprocess.Popen(argv, cwd=kit.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(r[1].endswith("/submission.csv") for r in kit.state.requests):  # the first is downloading
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.Popen(argv, cwd=kit.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = kit.repo / "submissions" / "v1"
    for proc in (first, second):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "pulled v1" in out
        assert folder_files(folder) == expected_files(kit)  # whole the moment it reports success
        kit.state.slow = {}  # the second pull, still waiting or downloading, need not be slow too
    assert "another lorakit is pulling v1; waiting" in err  # the second one said so
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith((".v1.partial", ".v1.old"))]
    assert len([r for r in kit.state.requests if r[1].endswith("/submission.csv")]) == 2


def test_pull_refuses_once_its_wait_for_another_pull_runs_out(kit, monkeypatch):
    from filelock import FileLock

    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    monkeypatch.setenv("LORAKIT_LOCK_WAIT_S", "0.2")
    before = len(kit.state.requests)
    with FileLock(str(kit.repo / "submissions" / ".pull-v1.lock")):
        code, out, err = kit.run("pull", 1)
    assert code == 1 and "still pulling v1" in one_error_line(err) and "waiting up to 0.2 s" in err
    assert len(kit.state.requests) == before and not (kit.repo / "submissions" / "v1").exists()


def test_pull_with_a_truncated_metrics_json_lands_the_files(kit):
    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    outputs = versions(kit)[0].outputs
    outputs["metrics.json"] = outputs["metrics.json"][:40]
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    folder = kit.repo / "submissions" / "v1"
    assert folder_files(folder) == expected_files(kit)
    assert "metrics.json is not a JSON object" in err and ".partial" not in out + err
    row = kit.row(1)
    assert row["val_accuracy"] == row["run_minutes"] == row["run_config_hash"] == ""
    assert row["config_hash"] and row["status"] == "COMPLETE"
    assert kit.run("submit", 1)[0] == 0  # the valid submission.csv can still be had


def test_pull_warns_on_an_invalid_submission_and_an_interrupted_run(kit):
    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    outputs = versions(kit)[0].outputs
    metrics = json.loads(outputs["metrics.json"])
    metrics["interrupted"] = True
    outputs["metrics.json"] = json.dumps(metrics).encode()
    outputs["submission.csv"] = b"ID,Label\n0,1\n1,9\n"
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    assert "submission.csv is NOT a valid submission, do not submit it" in err
    assert "run was interrupted" in err
    assert (kit.repo / "submissions" / "v1" / "submission.csv").read_bytes() == b"ID,Label\n0,1\n1,9\n"
    assert float(kit.row(1)["val_accuracy"]) == pytest.approx(0.901)


def test_pulled_folder_and_ledger_follow_the_umask(kit):
    old = os.umask(0o022)
    try:
        push_pull(kit)
    finally:
        os.umask(old)
    folder = kit.repo / "submissions" / "v1"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "submission.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE(kit.ledger.stat().st_mode) == 0o644


# ------------------------------------------------------------------------------------------ push ledger
def test_push_removes_its_build_folder_unless_asked_to_keep_it(kit, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out, err = push(kit)
    assert not list(scratch.iterdir()) and "build folder" not in out

    out, err = push(kit, "--build-dir", "build")
    text = (kit.repo / "build" / "agnews_lora.py").read_text()
    assert text == versions(kit)[1].text  # what was checked is what was pushed
    assert text.count("# lorakit push token: ") == 1 and kit.row(2)["push_token"] in text
    compile(text, "agnews_lora.py", "exec")
    assert kit.row(1)["push_token"] != kit.row(2)["push_token"]


# ---------------------------------------------------------------------------------------- credentials
def _home_kaggle(kit):
    folder = kit.repo.parent / "home" / ".kaggle"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _kaggle_json(kit):
    return kit.repo.parent / "kaggle-config" / "kaggle.json"


def _credentials_json(kit, token):
    (_home_kaggle(kit) / "credentials.json").write_text(json.dumps({
        "refresh_token": "refresh-0123456789", "access_token": token, "username": USERNAME, "scopes": [],
        "access_token_expiration": "2099-01-01T00:00:00+00:00",
    }))


@pytest.mark.parametrize("source", ["token value", "token file", "access_token", "kaggle.json", "username+key",
                                    "auth login"])
def test_credentials_are_read_in_the_clients_order(kit, monkeypatch, source):
    kit.state.tokens = {TOKEN: USERNAME}
    if source == "token value":
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)  # wins over the kaggle.json beside it
    elif source == "token file":
        path = kit.repo.parent / "token.txt"
        path.write_text(TOKEN + "\n")
        monkeypatch.setenv("KAGGLE_API_TOKEN", str(path))
    elif source == "access_token":
        (_home_kaggle(kit) / "access_token").write_text(TOKEN)
    elif source == "kaggle.json":
        _credentials_json(kit, TOKEN)  # kaggle.json wins over kaggle auth login's cache
    elif source == "username+key":
        _kaggle_json(kit).unlink()
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    else:
        _kaggle_json(kit).unlink()
        _credentials_json(kit, TOKEN)
    code, out, err = kit.run("scores")
    assert code == 0, err
    bearer = source not in ("kaggle.json", "username+key")
    assert kit.state.calls("ListSubmissions")[-1][3] == (f"bearer:{USERNAME}" if bearer else f"basic:{USERNAME}")
    assert len(kit.state.calls("IntrospectToken")) == int(source in ("token value", "token file", "access_token"))
    assert TOKEN not in out + err and SECRET not in out + err


def test_credentials_none_found(kit):
    _kaggle_json(kit).unlink()
    code, out, err = kit.run("scores")
    line = one_error_line(err)
    assert code == 1 and line.startswith("lorakit: error: no Kaggle credentials found")
    assert line.index("KAGGLE_API_TOKEN") < line.index("access_token") < line.index("kaggle.json") < line.index(
        "credentials.json") < line.index("run `kaggle auth login`")
    assert not kit.state.requests and out == ""


@pytest.mark.parametrize("damage, expected", [("not json", "is not a valid JSON object"),
                                              ("directory", "cannot be read (Is a directory)"),
                                              ("no key", "lacks 'key'")])
def test_credentials_file_unreadable_or_invalid(kit, damage, expected):
    path = _kaggle_json(kit)
    path.unlink()
    if damage == "not json":
        path.write_text('{"username": "alice", "key": ')
    elif damage == "directory":
        path.mkdir()
    else:
        path.write_text('{"username": "alice"}')
    code, out, err = kit.run("scores")
    line = one_error_line(err)
    assert code == 1 and f"the Kaggle credentials file {path} {expected}" in line
    assert "no Kaggle credentials found" not in line and "kaggle auth login" in line
    assert not kit.state.requests


@pytest.mark.parametrize("fallback", ["none", "kaggle.json", "auth login"])
def test_credentials_rejected_by_kaggle(kit, monkeypatch, fallback):
    kit.state.tokens = {"oauth-token-0123": USERNAME}
    if fallback != "kaggle.json":
        _kaggle_json(kit).unlink()
    if fallback == "auth login":
        _credentials_json(kit, "oauth-token-0123")
    # Unknown to the stand-in, so introspection says inactive and the client falls back. After a fallback to
    # kaggle.json its HTTP layer still sends this token with every call: lorakit stops at once.
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    code, out, err = kit.run("scores")
    assert len(kit.state.calls("IntrospectToken")) == 1 and TOKEN not in err
    if fallback == "auth login":  # the client sends kaggle auth login's token instead: it works
        assert code == 0 and "warning: Kaggle rejected the access token from KAGGLE_API_TOKEN; using" in err
        assert kit.state.calls("ListSubmissions")[-1][3] == f"bearer:{USERNAME}"
        return
    line = one_error_line(err)
    assert code == 1 and "Kaggle rejected the access token from KAGGLE_API_TOKEN" in line
    assert "no Kaggle credentials found" not in line and "kaggle auth login" in line
    assert not kit.state.calls("ListSubmissions")


def test_credentials_rejected_with_401(kit, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    kit.state.fail("IntrospectToken", 401)
    code, out, err = kit.run("scores")
    assert code == 1 and "rejected the credentials (401) from KAGGLE_API_TOKEN" in one_error_line(err)
    assert TOKEN not in err
