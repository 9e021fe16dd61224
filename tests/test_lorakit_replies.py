"""Odd replies and odd text (issue 14): what is not Kaggle's API JSON is one line and never a status, the user's
secrets never reach a message, internet-off configs are refused before the push, and the smaller things a user
meets (a log stream that 404s, a closed stdout, pull's next step, unwritable output paths, argparse under
--json, logs --json). Through the real kaggle client against the stand-in server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from kaggle_standin import LOG_STREAM  # noqa: E402
from lorakit_fixtures import REPO, SECRET, USERNAME, kaggle_imported, kit, push, push_pull  # noqa: E402,F401

AG_NEWS = "amananandrai/ag-news-classification-dataset"
PORTAL = "not Kaggle's API: a captive portal or proxy?"


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("lorakit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def one_document(out: str) -> dict:
    assert len(out.strip().splitlines()) == 1, out
    return json.loads(out)


def versions(kit) -> list:
    return kit.state.versions(USERNAME, kit.slug)


def metadata_write(kit, **changes) -> None:
    meta = {**kit.metadata, **changes}
    (kit.repo / "kernel-metadata.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------------------------ odd replies
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
        assert code == 1 and one_error_line(err).endswith(said), (argv, err)
        assert "QUEUED" not in out + err and "Expecting value" not in err
    code, out, err = kit.run("status", 1, "--json")
    assert code == 1 and one_document(out) == {"error": one_error_line(err)[len("lorakit: error: "):], "exit_code": 1}
    assert kit.row(1)["status"] == "QUEUED" and kit.row(1)["pulled_at"] == ""  # as the push left it
    assert not [r for r in kit.state.requests if r[1] == "/login"]  # the redirect was not followed
    kit.state.faults.clear()
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 COMPLETE" in out and kit.row(1)["status"] == "COMPLETE"


def test_a_status_reply_without_a_status_reads_as_queued_and_is_never_recorded(kit):
    """Kaggle's JSON leaves out a field that holds its default, and QUEUED is the status's default: a real
    queued run may answer {}. It reads as QUEUED, as the client reads it, and is never written to the ledger."""
    push(kit)
    kit.row(1)  # pushed as QUEUED
    versions(kit)[0].statuses = ["COMPLETE"]
    kit.run("status", 1)  # the ledger now says COMPLETE
    assert kit.row(1)["status"] == "COMPLETE"
    kit.state.odd("GetKernelSessionStatus", "{}", times=None)
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 QUEUED (the reply named no status: not recorded)" in out
    assert kit.row(1)["status"] == "COMPLETE"
    code, out, err = kit.run("status", 1, "--json")
    assert code == 0 and json.loads(out)["status_named"] is False


@pytest.mark.parametrize("method, argv", [
    ("ListSubmissions", ("scores",)),
    ("GetAcceleratorQuotaStatistics", ("quota",)),
    ("ListKernelSessionOutput", ("logs", 1)),
    ("GetKernel", ("push", "-m", "x")),
])
def test_a_captive_portal_page_is_one_line_for_every_call(kit, method, argv):
    push(kit)
    kit.state.odd(method, "html", times=None)
    before = len(kit.state.calls(method))
    code, out, err = kit.run(*argv)
    assert code == 1 and one_error_line(err).endswith(f"a web page, {PORTAL}"), err
    assert len(kit.state.calls(method)) == before + 1  # not retried: a portal answers the same every time


def test_a_proxys_error_page_labelled_json_is_read_by_its_status(kit):
    kit.state.odd("GetAcceleratorQuotaStatistics", "bad-gateway")  # once: a 5xx is retried
    code, out, err = kit.run("quota")
    assert code == 0 and "HTTP 502; retrying" in err and "GPU quota this week" in out, err
    kit.state.odd("GetAcceleratorQuotaStatistics", "bad-gateway", times=None)
    code, out, err = kit.run("quota")
    assert code == 1 and "Kaggle server error (502)" in one_error_line(err)


def test_an_unknown_status_is_shown_as_unknown_and_not_recorded(kit):
    push(kit)
    versions(kit)[0].statuses = ["PREEMPTED"]
    for argv in (("status", 1), ("status", 1, "--wait"), ("logs", 1, "--follow")):
        code, out, err = kit.run(*argv)
        assert code == 1 and "unknown status 'PREEMPTED' from Kaggle" in one_error_line(err), (argv, err)
    assert kit.row(1)["status"] == "QUEUED"


def test_an_unknown_submission_status_is_one_line_and_not_recorded(kit):
    push_pull(kit)
    kit.state.submission_script = ["WEIRD"]
    code, out, err = kit.run("submit", 1)
    assert code == 0, err
    code, out, err = kit.run("scores")
    assert code == 1 and "unknown value 'WEIRD' from Kaggle" in one_error_line(err)
    assert kit.row(1)["submission_status"] == "PENDING"


def test_secrets_in_server_messages_are_redacted_everywhere(kit):
    leak = f"KAGGLE_KEY={SECRET} was printed by the script"
    kit.state.status_script = ["RUNNING", "ERROR"]
    kit.state.failure_message = leak
    kit.state.run_hook = lambda text, n: (kit.fake_run(text, n)[0],
                                          json.dumps([{"stream_name": "stderr", "time": 1.0, "data": leak}]))
    code, out, err = kit.run("run", "-m", "x", "--follow")
    assert code == 3 and "KAGGLE_KEY=*** was printed" in one_error_line(err)
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


def test_a_followed_live_log_is_redacted(kit):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)
    kit.state.log_feed(USERNAME, kit.slug, 1, f"token {SECRET}\n")
    threading.Timer(0.5, kit.state.run_end, (USERNAME, kit.slug, 1)).start()
    code, out, err = kit.run("logs", 1, "--follow")
    assert code == 0 and out == "token ***\n" and SECRET not in err


# ------------------------------------------------------------------------------------------ internet off
def test_internet_off_refuses_a_hub_model_before_any_network_call(kit, minilm_path):
    metadata_write(kit, enable_internet=False)
    for argv in (("check",), ("push", "-m", "x", "--dry-run"), ("push", "-m", "x"), ("run", "-m", "x")):
        code, out, err = kit.run(*argv)
        line = one_error_line(err)
        assert code == 1 and "enable_internet is false" in line and "model roberta-base is a Hugging Face hub id" in line
        assert "model_sources" in line and "--set model=/kaggle/input/" in line, line
    assert not kit.state.requests and not kit.ledger.exists()
    code, out, err = kit.run("check", "--set", f"model={minilm_path}")  # a folder, as /kaggle/input/... is there
    assert code == 0, err  # and the AG News CSVs are attached: train_data=auto finds them offline
    assert kit.run("check", "--set", "smoke=true")[0] == 0  # a tiny random encoder, synthetic data
    metadata_write(kit, enable_internet=True)
    assert kit.run("check")[0] == 0


@pytest.mark.parametrize("sources, sets, refused, warned", [
    ([AG_NEWS], ("train_data=hf:ag_news",), "train_data hf:ag_news downloads from the Hugging Face hub", ""),
    ([], (), "train_data auto falls back to hf:ag_news", ""),
    (["alice/my-ag-news"], (), "", "unless one of alice/my-ag-news does"),
    ([AG_NEWS], ("train_data=/kaggle/input/x/train.csv",), "", ""),
])
def test_internet_off_and_the_training_data(kit, minilm_path, sources, sets, refused, warned):
    metadata_write(kit, enable_internet=False, dataset_sources=sources)
    argv = ["check", "--set", f"model={minilm_path}"] + [a for s in sets for a in ("--set", s)]
    code, out, err = kit.run(*argv)
    if refused:
        line = one_error_line(err)
        assert code == 1 and refused in line and f"attach the AG News CSVs {AG_NEWS} in dataset_sources" in line
    else:
        assert code == 0, err
        assert (warned in err) if warned else "hf:ag_news" not in err


def test_internet_off_predict_from_loads_the_encoder_its_adapter_was_trained_on(kit, minilm_path):
    metadata_write(kit, enable_internet=False)
    push_pull(kit, "--set", f"model={minilm_path}")
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1, "--dry-run")
    assert code == 0, err  # the adapter's kit.json names the attached model
    kit_json = kit.repo / "submissions" / "v1" / "adapter" / "kit.json"
    data = json.loads(kit_json.read_text())
    data["config"]["model"] = "roberta-base"
    kit_json.write_text(json.dumps(data))
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1, "--dry-run")
    assert code == 1 and "model roberta-base is a Hugging Face hub id" in one_error_line(err)


# ---------------------------------------------------------------------------------------- --follow 404
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
    threading.Timer(1.0, kit.state.run_end, (USERNAME, kit.slug, 1)).start()
    code, out, err = kit.run("logs", 1, "--follow")
    assert code == 0, err
    assert out == "effective config:\nepoch 1/1\n" and "is unavailable" in err


# ------------------------------------------------------------------------------------------- small things
def test_a_closed_stdout_ends_quietly(kit, tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader has gone before anything is written, as with `| head -1` on a long output
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "lorakit", "plan", "--head", "roberta", "--targets", "query",
                           "--ranks", "8", "--layers", "all"], cwd=kit.repo, env=env, stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("status, outputs, hint", [
    ("COMPLETE", None, "next: lorakit submit 1 --wait"),
    ("ERROR", None, "next: lorakit push --predict-from 1 -m MESSAGE"),
    ("COMPLETE", {"submission.csv": b"ID,Label\n0,7\n"}, "next: lorakit push --predict-from 1 -m MESSAGE"),
    ("ERROR", {"submission.csv": None}, "next: lorakit push --predict-from 1 -m MESSAGE"),
    ("ERROR", {"submission.csv": None, "adapter/kit.json": None}, ""),
])
def test_pull_suggests_submit_only_for_a_valid_submission_of_a_complete_run(kit, status, outputs, hint):
    def run_hook(text, number):
        files, log = kit.fake_run(text, number)
        for name, content in (outputs or {}).items():
            files.pop(name) if content is None else files.update({name: content})
        return files, log

    kit.state.run_hook = run_hook
    kit.state.status_script = [status]
    push(kit)
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    nexts = [line for line in out.splitlines() if line.startswith("next:")]
    assert nexts == ([hint] if hint else []), out


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


def test_a_token_file_that_does_not_exist_is_named(kit, monkeypatch, tmp_path):
    missing = tmp_path / "kaggle" / "access_token"
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(missing))
    code, out, err = kit.run("quota")
    line = one_error_line(err)
    assert code == 1 and f"KAGGLE_API_TOKEN names the file {missing}, which does not exist" in line
    assert "inactive or expired" not in line and not kit.state.requests


@pytest.mark.parametrize("argv", [("scores", "--plot", "{file}/plot.png"), ("leaderboard", "--download", "{file}/lb")])
def test_an_unwritable_output_path_is_refused_before_any_network_call(kit, argv):
    (kit.repo / "notes.txt").write_text("a file, not a folder\n")
    argv = [a.format(file="notes.txt") for a in argv]
    code, out, err = kit.run(*argv)
    assert code == 2 and one_error_line(err) == f"lorakit: error: {argv[1]} {argv[2]}: notes.txt is not a folder"
    assert not kit.state.requests
    code, out, err = kit.run(*argv, "--json")
    assert code == 2 and one_document(out)["exit_code"] == 2


def test_a_missing_kernel_package_names_the_checkouts_extra(kit, tmp_path, monkeypatch):
    from lorakit.errors import UsageError
    from lorakit.kernel import kernel_module_load

    script = tmp_path / "needs_a_package.py"
    script.write_text("import lorakit_no_such_package_xyz\n")
    monkeypatch.chdir(REPO)
    with pytest.raises(UsageError) as caught:
        kernel_module_load(script, name="needs_a_package")
    assert str(caught.value).endswith("needs lorakit_no_such_package_xyz, one of the kernel's dependencies: "
                                      "pip install -e '.[kernel]'")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        kernel_module_load(script, name="needs_a_package")
    assert str(caught.value).endswith(f"pip install -e '{REPO}[kernel]'") and "lorakit[kernel]" not in str(caught.value)


def test_outside_a_checkout_the_kernel_packages_are_named(tmp_path):
    import shutil

    shutil.copytree(REPO / "src" / "lorakit", tmp_path / "site" / "lorakit")  # lorakit without its checkout
    code = "from lorakit.kernel import kernel_install_hint; print(kernel_install_hint('torch'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                          capture_output=True, text=True, timeout=120)
    hint = proc.stdout.strip()
    assert proc.returncode == 0 and hint.startswith("pip install 'torch"), proc.stderr
    assert "lorakit" not in hint and "-e" not in hint


@pytest.mark.parametrize("argv, error", [
    (("status", "--json", "--bogus"), "unrecognized arguments: --bogus"),
    (("push", "--json"), "the following arguments are required: -m/--message"),
    (("check", "--json", "--set"), "argument --set: expected one argument"),
])
def test_command_line_errors_under_json_print_one_document(kit, argv, error):
    code, out, err = kit.run(*argv)
    assert code == 2 and one_document(out) == {"error": error, "exit_code": 2}
    assert "usage: lorakit" in err and f"error: {error}" in err
    code, out, err = kit.run(*[a for a in argv if a != "--json"])
    assert code == 2 and out == ""


def test_logs_json_holds_the_version_and_its_log(kit):
    push_pull(kit)
    text = kit.run("logs", 1)[1]
    code, out, err = kit.run("logs", "--json")
    assert code == 0 and one_document(out) == {"version": 1, "log": text}
    code, out, err = kit.run("logs", 1, "--follow", "--json")
    assert code == 0 and one_document(out) == {"version": 1, "status": "COMPLETE", "failure_message": None, "status_named": True, "log": text}
    assert "effective config:" in err  # followed text under --json: stderr
