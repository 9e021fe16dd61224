"""`lorakit logs`: the stored log, `--follow` on a live run and its fallbacks, redaction, `--json`."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from lorakit.common import log_readable

from kaggle_standin import LOG_STREAM
from lorakit_fixtures import PORTAL, REPO, SECRET, USERNAME, one_document, push, push_pull, versions


def test_logs_follow_prints_lines_of_a_running_kernel_before_it_ends(kit):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)
    kit.state.stream_drops = [2]  # the first connection drops after two lines; the next replays them
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "lorakit", "logs", "1", "--follow"], cwd=kit.repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        kit.state.log_feed(USERNAME, kit.slug, 1, "epoch 1/3 step 10\n")
        assert lines.get(timeout=60) == "epoch 1/3 step 10\n"  # printed while the run is still live
        assert versions(kit)[0].statuses == ["RUNNING"] and proc.poll() is None
        kit.state.log_feed(USERNAME, kit.slug, 1, "epoch 1/3 step 20\n", "epoch 2/3 step 30")
        assert lines.get(timeout=30) == "epoch 1/3 step 20\n"
        assert lines.get(timeout=30) == "epoch 2/3 step 30\n"
        kit.state.run_end(USERNAME, kit.slug, 1)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert lines.empty()  # nothing shown twice: neither the replay nor the stored log
    assert "dropped" in err and "reconnecting" in err and "v1 COMPLETE" in err
    assert len(kit.state.calls(f"/api/v1/kernels/logs/stream/{USERNAME}/{kit.slug}")) >= 3


def test_logs_follow_falls_back_to_status_polls_on_a_silent_stream_after_bounded_reconnects(kit, monkeypatch):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)
    kit.state.log_feed(USERNAME, kit.slug, 1, "effective config:\n")
    monkeypatch.setenv("LORAKIT_STREAM_TIMEOUT_S", "0.3")
    monkeypatch.setenv("LORAKIT_STREAM_RECONNECTS", "2")
    stream = f"/api/v1/kernels/logs/stream/{USERNAME}/{kit.slug}"

    def end_after_the_last_reconnect():  # the run ends while lorakit polls its status instead
        while len(kit.state.calls(stream)) < 4:
            time.sleep(0.05)
        time.sleep(1.0)
        kit.state.log_feed(USERNAME, kit.slug, 1, "done\n")
        kit.state.run_end(USERNAME, kit.slug, 1)

    ender = threading.Thread(target=end_after_the_last_reconnect, daemon=True)
    ender.start()
    start = time.monotonic()
    code, out, err = kit.run("logs", 1, "--follow")
    ender.join(30)
    assert code == 0 and time.monotonic() - start < 30, err
    assert out == "effective config:\ndone\n"  # each line once: the stored log past what the stream showed
    notes = [line for line in err.splitlines() if "is unavailable" in line]
    assert len(notes) == 1 and "dropped 3 times in a row without a new line (last: silent for 0.3 s)" in notes[0]
    assert len(kit.state.calls(stream)) == 4


@pytest.mark.parametrize("argv", [("logs", 1, "--follow"), ("status", 1, "--wait", "--follow")])
def test_follow_falls_back_to_the_stored_log_when_the_stream_404s(kit, argv):
    push(kit)
    assert kit.run("status", 1, "--wait")[0] == 0  # finished: `lorakit logs 1` reads its stored log
    stored = kit.run("logs", 1)[1]
    kit.state.fail(LOG_STREAM, 404, times=None)
    code, out, err = kit.run(*argv)
    assert code == 0, err
    assert stored in out and out.count("effective config:") == 1
    notes = [line for line in err.splitlines() if "the log stream of v1 is unavailable" in line]
    assert len(notes) == 1 and "not found (404)" in notes[0]


def test_a_web_page_for_the_log_stream_is_never_shown_as_the_log(kit):
    push(kit)
    assert kit.run("status", 1, "--wait")[0] == 0
    stored = kit.run("logs", 1)[1]
    kit.state.odd(LOG_STREAM, "html", times=None)
    code, out, err = kit.run("logs", 1, "--follow")
    assert code == 0 and out == stored and "<html" not in out + err
    assert f"is unavailable (stream the log of alice/{kit.slug} v1: a web page, {PORTAL})" in err


def test_follow_of_a_live_run_whose_stream_404s_prints_the_log_once_it_ends(kit):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)
    kit.state.log_feed(USERNAME, kit.slug, 1, "effective config:\n", "epoch 1/1\n")
    kit.state.fail(LOG_STREAM, 503, times=None)
    run_end_once_streamed(kit)
    code, out, err = kit.run("logs", 1, "--follow")
    assert code == 0, err
    assert out == "effective config:\nepoch 1/1\n" and "is unavailable" in err


def test_a_followed_live_log_is_redacted(kit):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)
    kit.state.log_feed(USERNAME, kit.slug, 1, f"token {SECRET}\n")
    run_end_once_streamed(kit)
    code, out, err = kit.run("logs", 1, "--follow")
    assert code == 0 and out == "token ***\n" and SECRET not in err
    assert kit.state.calls(LOG_STREAM)  # the live stream was read, not only the stored log


def test_logs_json_holds_the_version_and_its_log(kit):
    push_pull(kit)
    text = kit.run("logs", 1)[1]
    code, out, err = kit.run("logs", "--json")
    assert code == 0 and one_document(out) == {"version": 1, "log": text}
    code, out, err = kit.run("logs", 1, "--follow", "--json")
    assert code == 0 and one_document(out) == {"version": 1, "status": "COMPLETE", "failure_message": None, "status_named": True, "log": text}
    assert "effective config:" in err  # followed text under --json: stderr


def test_log_readable():
    raw = '[{"stream_name":"stdout","time":1,"data":"a\\n"},{"stream_name":"stderr","time":2,"data":"b"}]'
    assert log_readable(raw) == "a\nb\n"
    assert log_readable("plain text") == "plain text\n"


def run_end_once_streamed(kit):
    """End v1's live run once lorakit has asked for its log stream, whatever the machine's speed: the live
    path is then the one under test (a fixed timer could end it first, leaving only the stored log)."""
    def end():
        deadline = time.monotonic() + 30
        while not kit.state.calls(LOG_STREAM) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        kit.state.run_end(USERNAME, kit.slug, 1)

    threading.Thread(target=end, daemon=True).start()


def test_logs_follow_gives_up_after_its_timeout(kit, monkeypatch):
    kit.state.status_script = ["RUNNING"]
    push(kit)
    monkeypatch.setenv("LORAKIT_POLL_START_S", "0.05")
    code, out, err = kit.run("logs", 1, "--follow", "--timeout", "0.3")
    assert code == 4 and "v1 is still RUNNING after" in err and "--wait again" in err


def test_a_log_reaches_the_terminal_without_control_characters(kit):
    push(kit)
    versions(kit)[0].log = json.dumps([{"stream_name": "stdout", "time": 1.0,
                                        "data": "\x1b[31mred\x1b[0m 10%\r100%\x07\n"}])
    code, out, err = kit.run("logs", 1)
    assert code == 0 and "red 10%\n100%?\n" in out and "\x1b" not in out
    code, out, err = kit.run("logs", 1, "--json")
    assert json.loads(out)["log"] == "\x1b[31mred\x1b[0m 10%\r100%\x07\n"
