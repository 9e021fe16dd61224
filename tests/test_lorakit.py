"""lorakit end to end through the real kaggle client, against the stand-in Kaggle server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # robust under --import-mode=importlib too
from lorakit_fixtures import COMPETITION, REPO, SECRET, USERNAME, kaggle_imported, kit, push, push_pull  # noqa: F401




def no_secret(*texts):
    for text in texts:
        assert SECRET not in text


# ------------------------------------------------------------------------------------------- happy path
def test_happy_path_push_status_pull_submit_scores(kit):
    out, err = push(kit, "--set", "lora_r=8", message="r=8 baseline")
    assert f"pushed v1 of alice/{kit.slug}" in out
    assert "placeholder owner" in err and "using your username 'alice'" in err
    save = kit.state.calls("SaveKernel")[-1][2]
    assert save["slug"] == f"{USERNAME}/{kit.slug}"
    assert '"lora_r": 8' in save["text"]  # the build copy carries its overrides
    assert save["kernelType"] == "script" and save["language"] == "python"
    row = kit.row(1)
    assert row["message"] == "r=8 baseline"
    assert json.loads(row["overrides"]) == {"lora_r": 8}
    assert row["status"] == "QUEUED" and row["kernel_ref"] == f"alice/{kit.slug}"
    assert int(row["trainable_params"]) > 0 and len(row["config_hash"]) == 64
    pushed_hash = row["config_hash"]

    code, out, err = kit.run("status")
    assert code == 0 and "v1 QUEUED" in out
    code, out, err = kit.run("status", "--wait", "--timeout", "30")
    assert code == 0, err
    assert "v1 RUNNING" in out and "v1 COMPLETE" in out and "[0:00:00]" in out
    assert kit.row(1)["status"] == "COMPLETE"

    code, out, err = kit.run("pull")
    assert code == 0, err
    folder = kit.repo / "submissions" / "v1"
    for name in ("submission.csv", "probabilities.csv", "metrics.json", "log.txt", "training_curves.png",
                 "adapter/adapter_model.safetensors", "adapter/head.pt"):
        assert (folder / name).is_file(), name
    assert "trainable parameters 592,900" in (folder / "log.txt").read_text() or "trainable parameters" in (
        folder / "log.txt").read_text()
    assert not [p for p in (kit.repo / "submissions").iterdir() if p.name.startswith(".v")]
    assert not list(folder.rglob("*.kaggle-partial"))
    row = kit.row(1)
    assert float(row["val_accuracy"]) == pytest.approx(0.901)
    assert float(row["run_minutes"]) == pytest.approx(21.5)
    assert row["config_hash"] == pushed_hash  # the run used the pushed config: no warning
    assert "did not use the pushed config" not in err

    code, out, err = kit.run("submit", "1", "--wait")
    assert code == 0, err
    assert "submitted v1 as submission 50000001" in out and "public 0.86120" in out
    assert kit.state.submissions[0].description.startswith(f"v1 {USERNAME}/{kit.slug} {pushed_hash[:12]}")
    assert kit.state.submissions[0].content == (folder / "submission.csv").read_bytes()
    row = kit.row(1)
    assert row["submission_ref"] == "50000001" and row["submission_status"] == "COMPLETE"
    assert float(row["public_score"]) == pytest.approx(0.8612)

    code, out, err = kit.run("scores")
    assert code == 0, err
    assert "v1" in out and "0.86120" in out and "best public score:  v1" in out and "best validation:    v1" in out
    code, out, err = kit.run("scores", "--csv", "--plot", "scores.png")
    assert code == 0 and out.splitlines()[0].startswith("mark,version,ref,status,public,private,gap,val_acc")
    assert (kit.repo / "scores.png").read_bytes()[:4] == b"\x89PNG"
    no_secret(out, err)

    import pandas as pd

    frame = pd.read_csv(kit.ledger)
    assert list(frame["version"]) == [1] and frame.loc[0, "public_score"] == pytest.approx(0.8612)


def test_second_version_scores_gap_leaderboard_quota_compare_logs(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    kit.state.score_hook = lambda content: ("0.85000", "0.84000")
    assert kit.run("submit", 1, "--wait")[0] == 0
    kit.state.score_hook = lambda content: ("0.86500", "0.86000")
    assert kit.run("submit", 2, "-m", "second", "--wait")[0] == 0

    code, out, err = kit.run("scores")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["PV", "v2"]  # best public and best validation, sorted by score
    assert "0.00500" in out and "0.01000" in out  # public-private gaps

    code, out, err = kit.run("leaderboard", "--top", "2", "--download", "lb")
    assert code == 0, err
    assert "top team" in out and "> " in out and "your rank: 2 (alice, 0.86500)" in out
    assert (kit.repo / "lb" / f"{COMPETITION}.zip").is_file()

    code, out, err = kit.run("quota")
    assert code == 0, err
    assert "10.50 h used, 19.50 h left of 30.00 h" in out and "v1" in out and "43.0 min" in out

    code, out, err = kit.run("compare", 1, 2)
    assert code == 0, err
    assert "agreement 100.00%" in out and "World" in out

    (kit.repo / "submissions" / "v2" / "submission.csv").write_text(
        "ID,Label\n" + "".join(f"{i},{(i * 7 + (i % 2)) % 4}\n" for i in range(8000)))
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0 and "agreement 50.00% (4000 rows differ)" in out and "mean confidence" in out

    code, out, err = kit.run("logs", 2)
    assert code == 0 and "effective config:" in out and "epoch 1/1" in out and "stream_name" not in out


def test_pull_warns_when_run_hash_differs(kit):
    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    version = kit.state.versions(USERNAME, kit.slug)[0]
    metrics = json.loads(version.outputs["metrics.json"])
    metrics["config_hash"] = "0" * 64
    version.outputs["metrics.json"] = json.dumps(metrics).encode()
    pushed = kit.row(1)["config_hash"]
    code, out, err = kit.run("pull", 1)
    assert code == 0 and "did not use the pushed config" in err
    assert kit.row(1)["run_config_hash"] == "0" * 64 and kit.row(1)["config_hash"] == pushed  # both kept


def test_pull_pages_through_many_outputs(kit):
    kit.state.page_size_cap = 3
    version = push_pull(kit)
    assert (kit.repo / "submissions" / f"v{version}" / "adapter" / "kit.json").is_file()
    assert len(kit.state.calls("ListKernelSessionOutput")) >= 3


# ----------------------------------------------------------------------------------------------- push
def test_push_dry_run_and_predict_from(kit):
    code, out, err = kit.run("push", "-m", "dry", "--dry-run", "--build-dir", "build", "--set", "lora_r=4")
    assert code == 0, err
    assert not kit.state.requests and not kit.ledger.exists()
    meta = json.loads((kit.repo / "build" / "kernel-metadata.json").read_text())
    assert meta["code_file"] == "agnews_lora.py"
    text = (kit.repo / "build" / "agnews_lora.py").read_text()
    assert kit.kmod().read_overrides_block(text) == {"lora_r": 4}
    compile(text, "agnews_lora.py", "exec")

    version = push_pull(kit)
    code, out, err = kit.run("push", "-m", "predict only", "--predict-from", version, "--set", "prior_correction=em",
                             "--accelerator", "NvidiaTeslaT4")
    assert code == 0, err
    assert "latest output" not in err  # the adapter is version N's own, carried by a dataset
    save = kit.state.calls("SaveKernel")[-1][2]
    dataset = f"{USERNAME}/{kit.slug}-v{version}-adapter"
    assert not save.get("kernelDataSources") and dataset in save["datasetDataSources"]
    assert save["machineShape"] == "NvidiaTeslaT4"
    block = kit.kmod().read_overrides_block(save["text"])
    assert block["adapter_from"] == f"/kaggle/input/{kit.slug}-v{version}-adapter" and block["prior_correction"] == "em"
    assert kit.row(2)["predict_from"] == str(version) and kit.row(2)["adapter_dataset"] == dataset


def test_push_no_run_records_a_saved_version(kit):
    code, out, err = kit.run("push", "-m", "save only", "--no-run")
    assert code == 0 and "saved (not run) v1" in out
    assert kit.state.calls("SaveKernel")[-1][2]["kernelExecutionType"] == "QUICK_SAVE"
    assert kit.row(1)["status"] == "NEW_SCRIPT"


def test_push_refuses_over_budget_and_bad_keys_before_any_network_call(kit):
    code, out, err = kit.run("push", "-m", "too big", "--set", "lora_r=64", "--set", "lora_targets=query,key,value")
    assert code == 1 and "exceed param_budget" in err and len(err.strip().splitlines()) == 1
    code, out, err = kit.run("push", "-m", "typo", "--set", "lora_rank=8")
    assert code == 1 and "unknown config key 'lora_rank'" in err
    assert "Traceback" not in err
    assert not kit.state.requests and not kit.ledger.exists()


def test_push_refuses_a_build_copy_that_does_not_compile(kit, monkeypatch):
    kmod = kit.kmod()  # the very module lorakit loaded (cached per path)
    monkeypatch.setattr(kmod, "render_overrides", lambda text, overrides: text.replace("OVERRIDES_JSON = r", "OVERRIDES_JSON = (r", 1))
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "does not compile" in err
    assert not kit.state.requests and not kit.ledger.exists()


def test_push_error_field_is_a_failure(kit):
    kit.state.push_error = "Notebook is too large"
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "Kaggle refused the push" in err and "Notebook is too large" in err
    assert kit.rows() == []  # recorded before sending, dropped once refused


# --------------------------------------------------------------------------------------------- faults
def test_http_401_gives_credential_advice_without_secrets(kit):
    kit.state.fail("SaveKernel", 401, times=None)
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1
    assert "401" in err and "kaggle.json" in err and "KAGGLE_API_TOKEN" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    no_secret(out, err)
    assert len(kit.state.calls("SaveKernel")) == 1  # 401 is not retried
    assert kit.rows() == []  # recorded before sending, dropped once refused


def test_wrong_key_is_rejected_by_the_server(kit):
    kit.state.key = "another-key"
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "rejected the credentials (401)" in err
    no_secret(out, err)


def test_missing_credentials(kit, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    code, out, err = kit.run("status", "1")
    assert code == 1 and "no Kaggle credentials found" in err and "KAGGLE_USERNAME" in err
    assert out == ""


def test_readable_kaggle_json_warns(kit):
    (kit.repo.parent / "kaggle-config" / "kaggle.json").chmod(0o644)
    push(kit)
    code, out, err = kit.run("status")
    assert code == 0 and "readable by group or others" in err and "chmod 600" in err


def test_http_403_advises_accepting_the_rules(kit):
    push_pull(kit)
    kit.state.fail("GetSubmissionLimits", 403, times=None)
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "403" in err and f"/competitions/{COMPETITION}/rules" in err
    assert not kit.state.calls("StartSubmissionUpload")


def test_http_404_advises_checking_the_slug(kit):
    code, out, err = kit.run("status", "7", "--kernel", "alice/no-such-kernel")
    assert code == 1 and "404" in err and "check the kernel id alice/no-such-kernel" in err
    code, out, err = kit.run("scores", "--competition", "no-such-competition")
    assert code == 1 and "404" in err and "check the competition slug 'no-such-competition'" in err


def test_http_500_is_retried_within_bounds_then_reported(kit):
    kit.state.fail("ListSubmissions", 500, times=None)
    code, out, err = kit.run("scores")
    assert code == 1
    assert "server error (500)" in err.splitlines()[-1] and "gave up after 4 attempt(s)" in err
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


def test_connection_refused_is_retried_then_reported(kit, monkeypatch):
    kit.server.stop()
    code, out, err = kit.run("status", "1", "--kernel", f"alice/{kit.slug}")
    assert code == 1 and "could not reach Kaggle" in err and "gave up" in err


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


def test_pull_refuses_a_running_version(kit):
    kit.state.status_script = ["RUNNING"]
    push(kit)
    code, out, err = kit.run("pull")
    assert code == 1 and "still RUNNING" in err and "status 1 --wait" in err
    assert not (kit.repo / "submissions" / "v1").exists()


def test_download_cut_mid_file_leaves_no_folder(kit):
    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    before = kit.ledger.read_bytes()
    kit.state.cut = {"submission.csv"}
    code, out, err = kit.run("pull", 1)
    assert code == 1 and "download of submission.csv failed" in err
    submissions = kit.repo / "submissions"
    assert sorted(p.name for p in submissions.iterdir() if not p.name.endswith(".lock")) == ["ledger.csv"]
    assert kit.ledger.read_bytes() == before
    kit.state.cut = set()
    code, out, err = kit.run("pull", 1)  # a later pull completes
    assert code == 0 and (submissions / "v1" / "submission.csv").is_file()


def test_download_cut_once_is_resumed_by_the_client(kit, monkeypatch):
    import importlib

    extended = importlib.import_module("kaggle.api.kaggle_api_extended")  # `kaggle.api` is an instance

    push(kit)
    assert kit.run("status", "--wait")[0] == 0
    monkeypatch.setenv("LORAKIT_DOWNLOAD_RETRIES", "2")
    monkeypatch.setattr(extended.time, "sleep", lambda s: None)  # the client's own backoff (2 s and up)
    kit.state.cut_once = {"probabilities.csv"}
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    version = kit.state.versions(USERNAME, kit.slug)[0]
    assert (kit.repo / "submissions" / "v1" / "probabilities.csv").read_bytes() == version.outputs["probabilities.csv"]
    ranged = [r for r in kit.state.requests if r[0] == "GET" and r[1].endswith("/probabilities.csv")]
    assert len(ranged) == 2


def test_pull_again_replaces_the_folder_atomically(kit):
    push_pull(kit)
    (kit.repo / "submissions" / "v1" / "stale.txt").write_text("old")
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    assert not (kit.repo / "submissions" / "v1" / "stale.txt").exists()
    assert not [p for p in (kit.repo / "submissions").iterdir() if p.name.startswith(".v")]


def test_invalid_csv_is_refused_before_any_upload(kit):
    push_pull(kit)
    csv_path = kit.repo / "submissions" / "v1" / "submission.csv"
    csv_path.write_text("ID,Label\n0,1\n1,7\n")
    before = len(kit.state.requests)
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "rows, expected 8000" in err
    assert len(kit.state.requests) == before  # no limits call, no upload
    code, out, err = kit.run("validate", csv_path)
    assert code == 1 and "submission.csv" in err
    code, out, err = kit.run("validate", csv_path, "--rows", "2")
    assert code == 1 and "Label must be 0-3" in err


def test_submit_without_pull_and_validate_ok(kit):
    code, out, err = kit.run("submit", 3)
    assert code == 1 and "run lorakit pull 3 first" in err
    push_pull(kit)
    code, out, err = kit.run("validate", "submissions/v1/submission.csv")
    assert code == 0 and "valid submission (8000 rows" in out


def test_zero_submissions_left_refuses(kit):
    push_pull(kit)
    kit.state.allowed_now = 0
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "no submissions left today" in err
    assert not kit.state.calls("StartSubmissionUpload") and not kit.state.calls("CreateSubmission")


def test_submission_scoring_error(kit):
    push_pull(kit)
    kit.state.submission_script = ["PENDING", "ERROR"]
    code, out, err = kit.run("submit", 1, "--wait")
    assert code == 3 and "failed to score" in err
    assert kit.row(1)["submission_status"] == "ERROR"


def test_upload_failure_is_reported(kit):
    push_pull(kit)
    kit.state.fail("/upload/", 400, times=None)
    code, out, err = kit.run("submit", 1)
    assert code == 1 and "upload" in err and "nothing was submitted" in err
    assert not kit.state.calls("CreateSubmission")


# --------------------------------------------------------------------------------------------- ledger
def test_corrupted_ledger_is_never_overwritten(kit):
    kit.ledger.parent.mkdir()
    kit.ledger.write_text("version,message\n1,ok\n2,broken,extra,fields\n")
    before = kit.ledger.read_bytes()
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "corrupted" in err and "line 3" in err
    assert not kit.state.requests  # refused before the push
    assert kit.ledger.read_bytes() == before
    for argv in (("status",), ("scores",), ("quota",)):
        code, out, err = kit.run(*argv)
        assert code == 1 and "corrupted" in err
    assert kit.ledger.read_bytes() == before


def test_missing_ledger(kit):
    code, out, err = kit.run("status")
    assert code == 1 and "no ledger at" in err and "push a version first" in err
    code, out, err = kit.run("pull")
    assert code == 1 and "no ledger" in err
    code, out, err = kit.run("scores")  # works without one
    assert code == 0 and "no submissions" in out
    assert not kit.ledger.exists()
    code, out, err = kit.run("quota")
    assert code == 0 and "no run minutes recorded" in out


def test_ledger_gets_recreated_for_explicit_versions(kit):
    push_pull(kit)
    kit.ledger.unlink()
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    assert kit.row(1)["val_accuracy"]


# ------------------------------------------------------------------------------------------- offline
def test_check_json_reports_the_seed_config(kit):
    code, out, err = kit.run(
        "check", "--set", "head=roberta", "--set", "lora_r=8", "--set", "lora_alpha=8", "--set", "lora_targets=query", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["trainable_params"] == 741124 and data["within_budget"] is True
    assert set(data) >= {"trainable_params", "param_breakdown", "within_budget", "config_hash"}
    assert len(out.strip().splitlines()) == 1
    assert not kit.state.requests


def test_check_rejects_bad_metadata(kit):
    meta_path = kit.repo / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    for change, expected in (
        ({"title": "abc"}, "five characters"),
        ({"code_file": "missing.py"}, "does not exist"),
        ({"language": "julia"}, "'language'"),
        ({"kernel_type": "app"}, "'kernel_type'"),
        ({"enable_gpu": "yes"}, "'enable_gpu' must be true or false"),
        ({"id": "alice/abc"}, "5+ characters"),
    ):
        meta_path.write_text(json.dumps({**meta, **change}))
        code, out, err = kit.run("check")
        assert code == 1 and expected in err, (change, err)
    meta_path.write_text("{not json")
    code, out, err = kit.run("check")
    assert code == 1 and "not valid JSON" in err


def test_check_rejects_a_script_that_does_not_compile(kit):
    script = kit.repo / "kernel" / "agnews_lora.py"
    script.write_text(script.read_text() + "\ndef broken(:\n")
    code, out, err = kit.run("check")
    assert code == 1 and "does not compile" in err


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cli_help_and_offline_commands_need_no_kaggle():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "lorakit", "--help"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0 and "push" in result.stdout and "scores" in result.stdout
    code = (
        "import sys, lorakit.cli, lorakit.workflow, lorakit.planner, lorakit.remote;"
        "lorakit.cli.build_parser(); print('kaggle' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
    for command in ("check", "push", "status", "logs", "pull", "submit", "scores", "leaderboard", "compare", "quota",
                    "validate", "plan", "run"):
        result = subprocess.run([sys.executable, "-m", "lorakit", command, "--help"], capture_output=True, text=True,
                                env=env, timeout=60)
        assert result.returncode == 0 and "usage: lorakit " + command in result.stdout


def test_outside_a_repo(tmp_path, monkeypatch, capsys):
    from lorakit.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 1
    assert "no kernel-metadata.json found" in capsys.readouterr().err
