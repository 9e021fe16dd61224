"""Talking to Kaggle: HTTP errors and replies that are not the API's JSON, retries and their bounds, timeouts,
4xx that are final, secrets redacted; and the stand-in's own guard."""
from __future__ import annotations

import json
import os
import time
from email.utils import formatdate
from time import time as now

import pytest

from lorakit.errors import UsageError
from lorakit.retry import GaveUp, RetryPolicy, Timing, call_with_retry, is_unsent, retry_after_seconds

from lorakit_fixtures import error_line, COMPETITION, PORTAL, SECRET, TOKEN, one_document, push, push_pull, versions


class FakeResponse:
    def __init__(self, status, headers=None):
        self.status_code = status
        self.headers = headers or {}


class FakeHTTPError(Exception):
    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.response = FakeResponse(status, headers)


@pytest.fixture
def scaled(monkeypatch):
    """The default budgets scaled down 100x: a stalled server must end a command within 1.8 s (3 min),
    plus a fixed allowance for Python's own time on a busy machine, which does not scale."""
    for name, value in (("LORAKIT_TIMEOUT_S", "0.3"), ("LORAKIT_RETRY_TOTAL_S", "1.5"), ("LORAKIT_CONFIRM_S", "0.6"),
                        ("LORAKIT_RETRY_BASE_S", "0.01"), ("LORAKIT_RETRY_MAX_DELAY_S", "0.6"),
                        ("LORAKIT_RETRY_ATTEMPTS", "6")):
        monkeypatch.setenv(name, value)
    return 1.8 + 1.5


def test_http_403_advises_accepting_the_rules(kit):
    push_pull(kit)
    kit.state.fail("GetSubmissionLimits", 403, times=None)
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "403" in err and f"/competitions/{COMPETITION}/rules" in err
    assert not kit.state.calls("StartSubmissionUpload")


def test_http_404_advises_checking_the_slug(kit):
    code, out, err = kit.run("status", "7", "--kernel", "alice/no-such-kernel")
    assert code == 7 and "404" in err and "check the kernel id alice/no-such-kernel" in err
    code, out, err = kit.run("scores", "--competition", "no-such-competition")
    assert code == 7 and "404" in err and "check the competition slug 'no-such-competition'" in err


def test_http_500_is_retried_within_bounds_then_reported(kit):
    kit.state.fail("ListSubmissions", 500, times=None)
    code, out, err = kit.run("scores")
    assert code == 1
    assert "server error (500)" in err.splitlines()[-1] and "gave up after 4 attempts," in err
    assert len(kit.state.calls("ListSubmissions")) == 4  # LORAKIT_RETRY_ATTEMPTS
    assert err.count("retrying in") == 3


def test_http_429_then_success_honours_retry_after(kit, monkeypatch):
    push(kit)
    delays = []
    import lorakit.retry as retry

    real_sleep = retry.time.sleep
    monkeypatch.setattr(retry.time, "sleep", lambda s: (delays.append(s), real_sleep(min(s, 0.01))))
    kit.state.fail("GetKernelSessionStatus", 429, times=1, headers={"Retry-After": "1"})
    code, out, err = kit.run("status", "1")
    assert code == 0 and "v1 QUEUED" in out
    assert "HTTP 429; retrying in 1.0 s" in err
    assert delays and 1.0 <= delays[0] <= 1.2
    assert len(kit.state.calls("GetKernelSessionStatus")) == 2


def test_429_with_a_retry_after_beyond_the_budget_stops_at_once(kit):
    push(kit)
    kit.state.fail("GetKernelSessionStatus", 429, times=None, headers={"Retry-After": "3600"})
    code, out, err = kit.run("status", "1")
    assert code == 1 and "rate limited by Kaggle (429)" in err and "asked to wait 3600 s" in err
    assert len(kit.state.calls("GetKernelSessionStatus")) == 1


def test_connection_refused_is_retried_then_reported(kit):
    kit.server.stop()
    code, out, err = kit.run("status", "1", "--kernel", f"alice/{kit.slug}")
    assert code == 1 and "could not reach Kaggle" in err and "gave up" in err


@pytest.mark.parametrize("status", [429, 400])
def test_push_and_submit_4xx_are_final(kit, status):
    kit.state.fail("SaveKernel", status, headers={"Retry-After": "0"})
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and str(status) in error_line(err)
    assert len(kit.state.calls("SaveKernel")) == 1 and not versions(kit) and kit.rows() == []

    push_pull(kit)
    kit.state.fail("CreateSubmission", status, headers={"Retry-After": "0"})
    code, out, err = kit.run("submit", 1)
    assert code == 1 and str(status) in error_line(err)
    assert len(kit.state.calls("CreateSubmission")) == 1 and not kit.state.submissions
    assert kit.row(1)["submission_status"] == "" and kit.row(1)["pending_status"] == ""


@pytest.mark.parametrize("method, argv", [
    ("ListSubmissions", ("scores",)),
    ("GetAcceleratorQuotaStatistics", ("quota",)),
    ("ListKernelSessionOutput", ("logs", 1)),
    ("GetKernel", ("push", "-m", "x", "--set", "lora_r=4")),  # another config: the same one needs --again
])
def test_a_captive_portal_page_is_one_line_for_every_call(kit, method, argv):
    push(kit)
    kit.state.odd(method, "html", times=None)
    before = len(kit.state.calls(method))
    code, out, err = kit.run(*argv)
    assert code == 1 and error_line(err).endswith(f"a web page, {PORTAL}"), err
    assert len(kit.state.calls(method)) == before + 1  # not retried: a portal answers the same every time


def test_a_proxys_error_page_labelled_json_is_read_by_its_status(kit):
    kit.state.odd("GetAcceleratorQuotaStatistics", "bad-gateway")  # once: a 5xx is retried
    code, out, err = kit.run("quota")
    assert code == 0 and "HTTP 502; retrying" in err and "GPU quota this week" in out, err
    kit.state.odd("GetAcceleratorQuotaStatistics", "bad-gateway", times=None)
    code, out, err = kit.run("quota")
    assert code == 1 and "Kaggle server error (502)" in error_line(err)


def test_secrets_in_server_messages_are_redacted_everywhere(kit):
    leak = f"KAGGLE_KEY={SECRET} was printed by the script"
    kit.state.status_script = ["RUNNING", "ERROR"]
    kit.state.failure_message = leak
    kit.state.run_hook = lambda text, n: (kit.fake_run(text, n)[0],
                                          json.dumps([{"stream_name": "stderr", "time": 1.0, "data": leak}]))
    code, out, err = kit.run("run", "-m", "x", "--follow")
    assert code == 3 and "KAGGLE_KEY=*** was printed" in error_line(err)
    seen = [out + err]
    for argv in (("status", 1), ("status", 1, "--json"), ("logs", 1), ("logs", 1, "--json")):
        code, out, err = kit.run(*argv)
        seen.append(out + err)
        assert "KAGGLE_KEY=***" in out + err, argv
    assert kit.run("pull", 1)[0] == 0
    assert one_document(kit.run("status", 1, "--json")[1])["failure_message"] == "KAGGLE_KEY=*** was printed by the script"
    assert "KAGGLE_KEY=***" in (kit.repo / "submissions" / "v1" / "log.txt").read_text()
    assert not [text for text in seen if SECRET in text]
    assert SECRET not in (kit.repo / "submissions" / "v1" / "log.txt").read_text() + kit.ledger.read_text()


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
    line = error_line(err)
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
    assert "authenticate: Kaggle did not answer in time" in error_line(err) and TOKEN not in err


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


@pytest.mark.parametrize("status, retryable, sent, raised", [
    (403, None, 1, FakeHTTPError),  # a client error is final
    (429, None, 3, GaveUp),  # too many requests is retried (the control: the override below is what stops it)
    (429, lambda e: False, 1, FakeHTTPError),  # the caller's classifier can make it final
])
def test_which_http_errors_are_retried(status, retryable, sent, raised):
    calls = []

    def failing():
        calls.append(1)
        raise FakeHTTPError(status)

    policy = RetryPolicy(base_delay=0.01, max_delay=0.01, total_time=100, max_attempts=3)
    options = {} if retryable is None else {"retryable": retryable}
    with open(os.devnull, "w") as log, pytest.raises(raised):
        call_with_retry(failing, policy, "x", timing=Timing(sleep=lambda s: None), log=log, **options)
    assert len(calls) == sent


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


def test_standin_stops_itself():
    from kaggle_standin import StandinServer

    server = StandinServer(lifetime=0.2).start()
    server.thread.join(timeout=5)
    assert not server.thread.is_alive()
    server.stop()  # idempotent
