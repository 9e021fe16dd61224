"""lorakit's pieces on their own: ledger, retries, references, logs, the stand-in's own guarantees."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
from email.utils import formatdate
from time import time as now

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lorakit_fixtures import REPO  # noqa: E402,F401  (puts src/ on sys.path)

from lorakit.errors import LedgerError, UsageError  # noqa: E402
from lorakit.ledger import COLUMNS, Ledger  # noqa: E402
from lorakit.project import KernelRef, git_state, slugify_title  # noqa: E402
from lorakit.retry import GaveUp, RetryPolicy, Timing, call_with_retry, is_unsent, retry_after_seconds  # noqa: E402
from lorakit.workflow import log_readable, version_parse  # noqa: E402


class FakeResponse:
    def __init__(self, status, headers=None):
        self.status_code = status
        self.headers = headers or {}


class FakeHTTPError(Exception):
    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.response = FakeResponse(status, headers)


# ------------------------------------------------------------------------------------------------ ledger
def test_ledger_round_trip_is_pandas_readable(tmp_path):
    import pandas as pd

    ledger = Ledger(tmp_path / "submissions" / "ledger.csv")
    assert ledger.rows() == [] and not ledger.exists()
    ledger.update(2, message='comma, "quotes"\nand a newline', trainable_params=592900, git_dirty=True)
    ledger.update(1, message="first", val_accuracy=0.9412345678)
    ledger.update(2, status="COMPLETE")
    rows = ledger.rows()
    assert [r["version"] for r in rows] == ["1", "2"]
    assert rows[1]["message"] == 'comma, "quotes"\nand a newline' and rows[1]["status"] == "COMPLETE"
    assert rows[1]["git_dirty"] == "true" and rows[0]["val_accuracy"] == "0.941235"
    frame = pd.read_csv(ledger.path)
    assert list(frame.columns) == COLUMNS and list(frame["version"]) == [1, 2]
    assert ledger.latest_version() == 2


def test_ledger_keeps_unknown_columns(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text("version,message,my_note\n3,hello,keep me\n")
    Ledger(path).update(3, status="RUNNING")
    row = Ledger(path).row(3)
    assert row["my_note"] == "keep me" and row["status"] == "RUNNING" and row["message"] == "hello"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "empty"),
        ("version,message\n1,a\n1,b\n", "appears twice"),
        ("version,message\nx,a\n", "line 2 has version 'x'"),
        ("message,status\nhello,ok\n", "header"),
        ("version,message\n1,a,b\n", "line 2 has 3 fields"),
        ("version,message\n1,\x00\n", "NUL"),
    ],
)
def test_corrupted_ledger_raises_and_is_not_rewritten(tmp_path, content, expected):
    path = tmp_path / "ledger.csv"
    path.write_text(content)
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match=expected):
        ledger.update(1, status="x")
    with pytest.raises(LedgerError):
        ledger.rows()
    assert path.read_text() == content


def test_ledger_not_utf8(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_bytes(b"version\n\xff\xfe\n")
    with pytest.raises(LedgerError, match="UTF-8"):
        Ledger(path).rows()


def test_ledger_concurrent_updates_lose_no_row(tmp_path):
    path = tmp_path / "ledger.csv"
    errors = []

    def writer(start):
        try:
            for v in range(start, start + 10):
                Ledger(path).update(v, message=f"m{v}")
                Ledger(path).update(v, status="QUEUED")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(1 + 10 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = Ledger(path).rows()
    assert [int(r["version"]) for r in rows] == list(range(1, 41))
    assert all(r["status"] == "QUEUED" and r["message"] == f"m{r['version']}" for r in rows)


def test_ledger_concurrent_processes(tmp_path):
    path = tmp_path / "ledger.csv"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from lorakit.ledger import Ledger;"
        "[Ledger(sys.argv[2]).update(int(sys.argv[3]) + i, message='p') for i in range(15)]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(REPO / "src"), str(path), str(100 * k + 1)]) for k in range(3)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert len(Ledger(path).rows()) == 45


def test_ledger_write_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ledger.csv"
    ledger = Ledger(path)
    ledger.update(1, message="safe")
    before = path.read_bytes()

    real_writerow = csv.DictWriter.writerow

    def exploding(self, row):
        if row.get("version") == "2":
            raise KeyboardInterrupt
        return real_writerow(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", exploding)
    with pytest.raises(KeyboardInterrupt):
        ledger.update(2, message="lost")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ledger.")] == []


def test_latest_version_needs_a_ledger(tmp_path):
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger(tmp_path / "ledger.csv").latest_version()
    (tmp_path / "ledger.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(LedgerError, match="no versions"):
        Ledger(tmp_path / "ledger.csv").latest_version()


# ------------------------------------------------------------------------------------------------- retry
def test_retry_backoff_grows_with_jitter_and_is_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    assert policy.backoff(1, rng=lambda: 0.0) == 0.5 and policy.backoff(1, rng=lambda: 1.0) == 1.0
    assert policy.backoff(3, rng=lambda: 1.0) == 4.0
    assert policy.backoff(10, rng=lambda: 1.0) == 8.0


def test_retry_honours_retry_after_and_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise FakeHTTPError(429 if len(calls) == 1 else 503, {"Retry-After": "2"} if len(calls) == 1 else {})
        return "ok"

    policy = RetryPolicy(base_delay=0.1, max_delay=10, total_time=100, max_attempts=5)
    log = open(os.devnull, "w")
    assert call_with_retry(flaky, policy, "x", timing=Timing(sleeps.append, lambda: 0.0, lambda: 0.5), log=log) == "ok"
    assert len(calls) == 3 and 2.0 <= sleeps[0] <= 2.1 and sleeps[1] == pytest.approx(0.15)


def test_retry_does_not_retry_client_errors():
    calls = []

    def denied():
        calls.append(1)
        raise FakeHTTPError(403)

    with pytest.raises(FakeHTTPError):
        call_with_retry(denied, RetryPolicy(), "x", timing=Timing(sleep=lambda s: None))
    assert len(calls) == 1


def test_retry_total_time_is_bounded():
    clock = [0.0]

    def always_down():
        raise ConnectionError("refused")

    def sleep(s):
        clock[0] += s

    policy = RetryPolicy(base_delay=4.0, max_delay=60, total_time=20, max_attempts=100)
    with pytest.raises(GaveUp) as info:
        call_with_retry(always_down, policy, "x", timing=Timing(sleep, lambda: clock[0], lambda: 1.0),
                        log=open(os.devnull, "w"))
    assert clock[0] <= 20 and info.value.attempts == 3 and "20 s budget" in info.value.reason


def test_retry_after_http_date():
    when = formatdate(now() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(FakeHTTPError(429, {"Retry-After": when})) <= 31
    assert retry_after_seconds(FakeHTTPError(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(FakeHTTPError(429)) is None


def test_retry_classifier_can_make_429_final():
    calls = []

    def limited():
        calls.append(1)
        raise FakeHTTPError(429)

    with pytest.raises(FakeHTTPError):
        call_with_retry(limited, RetryPolicy(), "x", timing=Timing(sleep=lambda s: None), retryable=lambda e: False)
    assert len(calls) == 1


def test_unsent_requests_are_told_apart_from_lost_replies():
    import requests
    import urllib3.exceptions as u3

    refused = u3.MaxRetryError(None, "/", reason=u3.NewConnectionError(None, "Connection refused"))
    assert is_unsent(requests.exceptions.ConnectionError(refused))
    assert is_unsent(requests.exceptions.ProxyError(u3.MaxRetryError(None, "/", reason=u3.ProxyError(
        "Unable to connect to proxy", u3.NewConnectionError(None, "refused")))))
    assert is_unsent(requests.exceptions.ConnectTimeout(u3.MaxRetryError(None, "/", reason=u3.ConnectTimeoutError())))
    assert not is_unsent(requests.exceptions.ReadTimeout(u3.ReadTimeoutError(None, "/", "read timed out")))
    assert not is_unsent(requests.exceptions.ConnectionError(u3.ProtocolError("Connection aborted.")))
    assert not is_unsent(FakeHTTPError(502))


def test_bounded_gives_every_request_a_timeout_and_only_inside():
    import socket
    import time

    import requests

    from lorakit.timeouts import bounded, request_timeout

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections (the kernel does) and never answers
    url = "http://127.0.0.1:%d/" % silent.getsockname()[1]
    session = requests.Session()
    session.trust_env = False  # straight to the socket, whatever proxy the environment names
    try:
        assert request_timeout() is None
        with bounded(0.3):
            assert request_timeout() == pytest.approx(0.3)
            start = time.monotonic()
            with pytest.raises(requests.exceptions.ReadTimeout):
                session.get(url)  # no timeout given: the wrapper supplies one
            assert time.monotonic() - start < 2
            with bounded(5.0, deadline=time.monotonic() + 0.2):  # the inner block wins, shortened to its deadline
                assert request_timeout() <= 0.2
            assert request_timeout() == pytest.approx(0.3)
        assert request_timeout() is None
    finally:
        session.close()
        silent.close()


def test_retry_policy_from_env():
    policy = RetryPolicy.from_env({"LORAKIT_RETRY_BASE_S": "0.5", "LORAKIT_RETRY_ATTEMPTS": "2"})
    assert policy.base_delay == 0.5 and policy.max_attempts == 2 and policy.total_time == RetryPolicy.total_time
    with pytest.raises(UsageError, match="LORAKIT_RETRY_TOTAL_S"):
        RetryPolicy.from_env({"LORAKIT_RETRY_TOTAL_S": "lots"})
    policy = RetryPolicy.from_env({"LORAKIT_TIMEOUT_S": "2.5", "LORAKIT_CONFIRM_S": "7", "LORAKIT_LOCK_WAIT_S": "9"})
    assert (policy.timeout, policy.confirm_time, policy.lock_wait) == (2.5, 7.0, 9.0)
    with pytest.raises(UsageError, match="LORAKIT_TIMEOUT_S must be a positive"):
        RetryPolicy.from_env({"LORAKIT_TIMEOUT_S": "0"})
    policy = RetryPolicy.from_env({"LORAKIT_STREAM_RECONNECTS": "2", "LORAKIT_DATASET_WAIT_S": "30"})
    assert (policy.stream_reconnects, policy.dataset_wait, policy.stream_timeout) == (2, 30.0, 90.0)
    with pytest.raises(UsageError, match="LORAKIT_STREAM_TIMEOUT_S must be a positive"):
        RetryPolicy.from_env({"LORAKIT_STREAM_TIMEOUT_S": "0"})
    # a followed log outwaits the kernel's progress line, printed every 60 s
    assert RetryPolicy().stream_timeout > 60
    # the defaults: one request never waits past 30 s and one call never past 150 s, under 3 minutes
    assert RetryPolicy().timeout <= RetryPolicy().total_time < 180


# ---------------------------------------------------------------------------------------------- little bits
def test_kernel_ref():
    ref = KernelRef.parse("alice/agnews-lora")
    assert (ref.owner, ref.slug, str(ref), ref.is_placeholder) == ("alice", "agnews-lora", "alice/agnews-lora", False)
    assert KernelRef.parse("your-kaggle-username/agnews-lora").is_placeholder
    assert KernelRef.parse("YOUR_USERNAME/agnews-lora").with_owner("bob") == KernelRef("bob", "agnews-lora")
    for bad in ("agnews-lora", "a/b/c", "/agnews-lora", "alice/abc", "alice/bad slug"):
        with pytest.raises(UsageError):
            KernelRef.parse(bad)
    with pytest.raises(Exception):
        ref.owner = "mallory"  # frozen


def test_slugify_and_versions():
    assert slugify_title("AG News LoRA under 1M") == "ag-news-lora-under-1m"
    assert version_parse("v12") == 12 and version_parse(3) == 3
    for bad in ("0", "-1", "latest", None):
        with pytest.raises(UsageError):
            version_parse(bad)


def test_log_readable():
    raw = '[{"stream_name":"stdout","time":1,"data":"a\\n"},{"stream_name":"stderr","time":2,"data":"b"}]'
    assert log_readable(raw) == "a\nb\n"
    assert log_readable("plain text") == "plain text\n"


def test_git_state(tmp_path):
    assert git_state(tmp_path) == ("", None) or git_state(tmp_path)[0] == ""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, env=env, capture_output=True, check=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    run("add", "a.txt")
    run("commit", "-qm", "one")
    sha, dirty = git_state(tmp_path)
    assert len(sha) == 40 and dirty is False
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "ledger.csv").write_text("version\n")
    run("add", "submissions/ledger.csv")
    run("commit", "-qm", "ledger")
    (tmp_path / "submissions" / "ledger.csv").write_text("version\n1\n")
    assert git_state(tmp_path)[1] is False  # the ledger changing does not make the code dirty
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path)[1] is True


def test_standin_stops_itself():
    from kaggle_standin import StandinServer

    server = StandinServer(lifetime=0.2).start()
    server.thread.join(timeout=5)
    assert not server.thread.is_alive()
    server.stop()  # idempotent
