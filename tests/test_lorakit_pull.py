"""`lorakit pull`: a run's outputs land whole or not at all (paging, cut downloads, concurrent pulls), with warnings
about the run (config hash, device, an invalid submission) and the next step."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from lorakit_fixtures import error_line, REPO, USERNAME, push, push_pull, versions


def expected_files(kit, number=1) -> set:
    return set(versions(kit)[number - 1].outputs) | {"log.txt"}


def folder_files(folder) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


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


@pytest.mark.slow
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
    assert code == 1 and "still pulling v1" in error_line(err) and "waiting up to 0.2 s" in err
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
    from lorakit.pull import device_mismatch

    assert device_mismatch("NvidiaTeslaT4", "Tesla T4") is None
    assert device_mismatch("NvidiaTeslaP100", "Tesla P100-PCIE-16GB") is None
    assert device_mismatch("NvidiaL4X1", "NVIDIA L4") is None
    assert device_mismatch("NvidiaH100", "NVIDIA H100 80GB HBM3") is None
    assert device_mismatch("NvidiaL4", "NVIDIA L40S")  # another GPU
    assert device_mismatch("gpu", "cpu (2 threads)")
    assert device_mismatch("gpu", "Tesla T4") is None  # any GPU will do
    assert device_mismatch("none", "cpu (4 threads)") is None and device_mismatch("TpuV5E8", "cpu") is None


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
