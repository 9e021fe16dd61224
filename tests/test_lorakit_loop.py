"""The experiment loop (issue 10): `lorakit run`, `logs --follow`, `--json` everywhere, predict-from a version's
own adapter, the device a run got, and each command's flags beside its handler. Through the real kaggle client
against the stand-in server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lorakit_fixtures import REPO, USERNAME, kaggle_imported, kit, push, push_pull  # noqa: F401




def one_document(out: str) -> dict:
    assert len(out.strip().splitlines()) == 1, out
    return json.loads(out)


def versions(kit) -> list:
    return kit.state.versions(USERNAME, kit.slug)


# -------------------------------------------------------------------------------------------------- run
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
    assert code == 1 and "lorakit push --no-run" in err and not kit.state.requests


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


# ------------------------------------------------------------------------------------------ logs --follow
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


def test_status_wait_follow_streams_the_log_then_reports_the_end(kit):
    push(kit)
    kit.state.live_start(USERNAME, kit.slug, 1)

    def feed():
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
    assert one_document(out) == {"version": 1, "status": "COMPLETE", "failure_message": None, "status_named": True}
    assert err.count("effective config:") == 1 and err.count("val_accuracy 0.9000") == 1  # under --json: stderr
    assert err.index("v1 RUNNING") < err.index("effective config:") < err.index("v1 COMPLETE")


# ------------------------------------------------------------------------------------------------- --json
def test_every_json_output_parses_and_has_its_keys(kit, tmp_path):
    code, out, err = kit.run("run", "--submit", "-m", "json", "--json")
    assert code == 0, err
    data = one_document(out)
    assert set(data) == {"version", "push", "status", "pull", "submission"}
    assert set(data["push"]) >= {"version", "status", "kernel", "url", "config_hash", "trainable_params",
                                 "param_budget", "overrides", "accelerator", "predict_from", "notes", "dry_run"}
    assert data["status"] == {"status": "COMPLETE", "failure_message": None, "status_named": True}
    assert set(data["pull"]) == {"version", "status", "folder", "files", "val_accuracy", "run_minutes", "device",
                                 "metrics", "warnings"}
    assert data["submission"]["ref"] == 50000001 and data["submission"]["score"]["public_score"] == 0.8612
    assert "pushed v1" in err and "scored: public" in err  # progress on stderr

    expected = {
        ("push", "-m", "two", "--set", "lora_r=4"): {"version", "status", "kernel", "url", "config_hash",
                                                      "trainable_params", "param_budget", "overrides",
                                                      "accelerator", "predict_from", "notes", "dry_run",
                                                      "build_dir"},
        ("status",): {"version", "status", "failure_message", "status_named"},
        ("status", 2, "--wait"): {"version", "status", "failure_message", "status_named"},
        ("pull", 2): {"version", "status", "folder", "files", "val_accuracy", "run_minutes", "device", "metrics",
                      "warnings"},
        ("submit", 2, "--wait"): {"version", "ref", "remaining_today", "notes", "score"},
        ("scores",): {"submissions", "best_public", "best_validation", "unrecorded", "not_submitted",
                      "not_candidates"},
        ("leaderboard", "--top", "2"): {"competition", "rows", "me", "download"},
        ("quota",): {"used_hours", "total_hours", "left_hours", "refresh", "runs"},
        ("compare", 1, 2): {"a", "b", "rows", "agreement", "per_class", "distribution_a", "distribution_b",
                            "disagreements", "confidence_a", "confidence_b"},
        ("validate", "submissions/v1/submission.csv"): {"file", "valid", "rows"},
        ("check", "--set", "lora_r=4"): {"trainable_params", "param_breakdown", "within_budget", "config_hash",
                                         "param_budget", "overrides", "usable_positions"},
        ("plan", "--head", "roberta", "--targets", "query", "--ranks", "8", "--layers", "all"):
            {"budget", "layers", "enumerated", "fitting", "evidence_source", "configs"},
    }
    for argv, keys in expected.items():
        code, out, err = kit.run(*argv, "--json")
        assert code == 0, (argv, err)
        assert set(one_document(out)) == keys, argv
    scores = json.loads(kit.run("scores", "--json")[1])
    assert scores["best_public"] in (1, 2) and {s["version"] for s in scores["submissions"]} == {1, 2}
    assert set(scores["submissions"][0]) >= {"ref", "status", "public_score", "private_score", "version", "gap",
                                             "val_accuracy", "overrides", "message"}
    board = json.loads(kit.run("leaderboard", "--json")[1])
    assert board["me"]["mine"] is True and set(board["rows"][0]) == {"rank", "team_id", "team_name", "score",
                                                                     "date", "mine"}
    compare = json.loads(kit.run("compare", 1, 2, "--json")[1])
    assert set(compare["per_class"]["World"]) == {"a_rows", "b_agrees", "b_rows", "a_agrees"}

    # a failure is one document too, with the same exit code
    kit.state.status_script = ["RUNNING", "ERROR"]
    kit.state.failure_message = "CUDA out of memory"
    push(kit, "--again")  # v1 ran this config to COMPLETE
    code, out, err = kit.run("status", 3, "--wait", "--json")
    assert code == 3 and one_document(out) == {"version": 3, "status": "ERROR", "failure_message": "CUDA out of memory", "status_named": True,
                                               "error": "v3 ended ERROR: CUDA out of memory", "exit_code": 3}
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Label\n0,9\n")
    code, out, err = kit.run("validate", bad, "--rows", "1", "--json")
    assert code == 1 and one_document(out)["valid"] is False and "Label" in one_document(out)["error"]
    code, out, err = kit.run("scores", "--json", "--csv")
    assert code == 1 and one_document(out) == {"error": "choose one of --csv and --json", "exit_code": 1}


# ------------------------------------------------------------------------------------------ predict-from
def overrides_of(kit, number: int) -> dict:
    return kit.kmod().read_overrides_block(versions(kit)[number - 1].text)


def test_predict_from_pins_each_versions_own_adapter_and_the_kernel_refuses_another(kit, tmp_path):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    base = kit.repo / "submissions" / "v1" / "adapter" / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "roberta"}')  # a smoke adapter keeps its tiny encoder
    kmod = kit.kmod()
    digests = {n: kmod.adapter_digest(kit.repo / "submissions" / f"v{n}" / "adapter") for n in (1, 2)}
    assert digests[1] != digests[2]

    for n, pushed in ((1, 3), (2, 4)):
        code, out, err = kit.run("push", "-m", f"from v{n}", "--predict-from", n)
        assert code == 0, err
        dataset = f"{kit.slug}-v{n}-adapter"
        block = overrides_of(kit, pushed)
        assert block["adapter_from"] == f"/kaggle/input/{dataset}" and block["adapter_sha256"] == digests[n]
        assert f"{USERNAME}/{dataset}" in versions(kit)[pushed - 1].request["datasetDataSources"]
        row = kit.row(pushed)
        assert (row["predict_from"], row["adapter_dataset"], row["adapter_sha256"]) == (
            str(n), f"{USERNAME}/{dataset}", digests[n])
        stored = kit.state.datasets[(USERNAME, dataset)]
        assert stored.private and digests[n] in stored.description
        local = kit.repo / "submissions" / f"v{n}" / "adapter"
        assert stored.versions[-1] == {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*")
                                       if p.is_file()}
    assert len(kit.state.calls("CreateDataset")) == 2 and "(created)" in out

    # Kaggle mounts v1's dataset: the kernel accepts it for v3 and refuses it for v4, pinned to v2's adapter
    mount = tmp_path / "kaggle" / "input" / f"{kit.slug}-v1-adapter"
    for name, content in kit.state.dataset_files(USERNAME, f"{kit.slug}-v1-adapter").items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_bytes(content)
    for pushed in (3, 4):
        cfg = kmod.config_from_overrides({**overrides_of(kit, pushed), "adapter_from": str(mount)})
        if pushed == 3:
            assert kmod.model_config(cfg).lora_r == 4  # v1's training config, read beside its adapter
        else:
            with pytest.raises(kmod.KernelError, match=f"not the adapter_sha256 {digests[2]}"):
                kmod.model_config(cfg)

    uploads = len(kit.state.calls("StartBlobUpload"))
    code, out, err = kit.run("push", "-m", "again", "--predict-from", 1)  # the same files: reused, not uploaded
    assert code == 0 and "(reused)" in out and len(kit.state.calls("StartBlobUpload")) == uploads
    (base / "config.json").write_text('{"model_type": "roberta", "changed": true}')
    code, out, err = kit.run("push", "-m", "changed", "--predict-from", 1)  # other files: a new version of it
    assert code == 0 and "(new version)" in out and len(kit.state.calls("CreateDatasetVersion")) == 1
    assert overrides_of(kit, 6)["adapter_sha256"] == kmod.adapter_digest(base.parent) != digests[1]
    assert len(kit.state.datasets[(USERNAME, f"{kit.slug}-v1-adapter")].versions) == 2


def test_predict_from_upload_reply_lost_is_not_created_twice(kit):
    push_pull(kit)
    kit.state.fail("CreateDataset", 502, after=True)
    kit.state.dataset_status_script = ["NOT_YET_PERSISTED", "BLOBS_RECEIVED", "READY"]
    code, out, err = kit.run("push", "-m", "from v1", "--predict-from", 1)
    assert code == 0, err
    assert len(kit.state.calls("CreateDataset")) == 1 and "went through: not sent again" in err
    assert len(kit.state.calls("GetDatasetStatus")) == 3  # pushed only once the dataset was READY
    assert kit.state.requests.index(kit.state.calls("GetDatasetStatus")[-1]) < kit.state.requests.index(
        kit.state.calls("SaveKernel")[-1])


def test_predict_from_needs_the_pulled_adapter(kit):
    code, out, err = kit.run("push", "-m", "x", "--predict-from", 5)
    assert code == 1 and "submissions/v5/adapter/kit.json does not exist: pull v5 first" in err
    assert not kit.state.requests


# ------------------------------------------------------------------------------------------------ device
@pytest.mark.parametrize("accelerator, device, warning", [
    (None, "Tesla T4 x2", None),  # the metadata asks for NvidiaTeslaT4
    (None, "cpu (4 threads)", "asked for NvidiaTeslaT4 but ran on cpu (4 threads) (metrics.json): the run got no GPU"),
    ("NvidiaTeslaP100", "Tesla T4 x2", "asked for NvidiaTeslaP100 but ran on Tesla T4 x2 (metrics.json)"),
])
def test_pull_warns_when_the_run_got_another_device(kit, accelerator, device, warning):
    push(kit, *(["--accelerator", accelerator] if accelerator else []))
    assert kit.row(1)["accelerator"] == (accelerator or "NvidiaTeslaT4")
    outputs = versions(kit)[0].outputs
    outputs["metrics.json"] = json.dumps({**json.loads(outputs["metrics.json"]), "device": device}).encode()
    assert kit.run("status", 1, "--wait")[0] == 0
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    assert f"device {device}" in out
    assert (f"lorakit: warning: v1 {warning}" in err) if warning else "asked for" not in err


def test_device_names_match_machine_shapes():
    from lorakit.workflow import device_mismatch

    assert device_mismatch("NvidiaTeslaT4", "Tesla T4") is None
    assert device_mismatch("NvidiaTeslaP100", "Tesla P100-PCIE-16GB") is None
    assert device_mismatch("NvidiaL4X1", "NVIDIA L4") is None
    assert device_mismatch("NvidiaH100", "NVIDIA H100 80GB HBM3") is None
    assert device_mismatch("NvidiaL4", "NVIDIA L40S")  # another GPU
    assert device_mismatch("gpu", "cpu (2 threads)")
    assert device_mismatch("gpu", "Tesla T4") is None  # any GPU will do
    assert device_mismatch("none", "cpu (4 threads)") is None and device_mismatch("TpuV5E8", "cpu") is None


# ------------------------------------------------------------------------------------------------ flags
def test_each_command_registers_its_flags_beside_its_handler_with_help():
    import argparse

    from lorakit import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(commands) == [name for name, *_ in cli.COMMANDS]
    for name, subparser in commands.items():
        handler = subparser.get_default("func")
        assert handler.__name__ == f"cmd_{name}" and handler.__module__ == "lorakit.cli"
        for action in subparser._actions:
            assert action.help and action.help.strip(), (name, action.dest)
    json_commands = {name for name, sub in commands.items() if any("--json" in a.option_strings for a in sub._actions)}
    assert json_commands == set(commands)
    push_flags = {a.dest for a in commands["push"]._actions}
    assert push_flags <= {a.dest for a in commands["run"]._actions}
