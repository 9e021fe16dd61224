"""Whole kernel runs, offline (smoke mode: a tiny random encoder on synthetic data; MiniLM for real weights).

Most runs go in-process through lorakit's loader, so that hooks can inject a fault (a NaN loss, a failing
write); runs that need a real process (signals, exit status, the log Kaggle keeps) are subprocesses.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import KERNEL, ROOT, kernel_env

METRIC_KEYS = {
    "trainable_params", "param_breakdown", "val_accuracy", "history", "train_seconds", "train_samples_per_second",
    "tokens_per_second", "predict_seconds", "test_rows", "test_label_distribution", "device", "versions",
    "config_hash", "interrupted", "signal", "test_file", "predicted_on", "model",
}
QUICK = ("smoke=true", "epochs=1", "max_train_samples=800")  # about 5 s in-process


@pytest.fixture
def run_main(kernel, capfd, monkeypatch):
    """kernel.main in this process: (exit status, stdout, stderr), spawned ranks' output included."""
    for key, value in kernel_env().items():
        if key.startswith(("HF_", "TQDM")):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)

    def run(*sets: str):
        capfd.readouterr()
        code = kernel.main([a for s in sets for a in ("--set", s)])
        out, err = capfd.readouterr()
        return code, out, err

    return run


def leftovers(tmpdir) -> list:
    """The kernel's temporary folders still in `tmpdir` (torch keeps a compile cache there too)."""
    return [p.name for p in tmpdir.iterdir() if p.name.startswith("agnews_")]


def snapshot(folder):
    """Every file under `folder` with its bytes: a failed run must leave this unchanged."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def used_output(smoke_run, tmp_path):
    """A copy of a finished run's output folder, for runs that must not touch it."""
    folder = tmp_path / "used"
    shutil.copytree(smoke_run[0], folder)
    return folder


# ------------------------------------------------------------------------------------------ smoke run
@pytest.mark.compat
def test_smoke_run_outputs(kernel, smoke_run):
    out, metrics, proc, tmpdir = smoke_run
    kernel.validate_submission(out / "submission.csv", 8000)
    assert METRIC_KEYS <= set(metrics)
    assert metrics["val_accuracy"] >= 0.8, metrics["history"]
    assert metrics["interrupted"] is False and metrics["signal"] is None
    assert metrics["test_rows"] == 8000 and sum(metrics["test_label_distribution"].values()) == 8000
    assert metrics["trainable_params"] == metrics["param_breakdown"]["total"] > 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert set(metrics["history"][0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy"}
    config = json.loads((out / "config.json").read_text())
    assert config["config_hash"] == metrics["config_hash"] and config["smoke"] is True
    probs = pd.read_csv(out / "probabilities.csv")
    assert probs["ID"].tolist() == list(range(8000))
    assert np.allclose(probs[[f"p_{i}" for i in range(4)]].sum(axis=1), 1.0, atol=1e-4)
    labels = pd.read_csv(out / "submission.csv")["Label"].to_numpy()
    assert (probs[[f"p_{i}" for i in range(4)]].to_numpy().argmax(1) == labels).all()
    assert {"adapter_config.json", "head.pt", "kit.json"} <= {p.name for p in (out / "adapter").iterdir()}
    assert "trainable parameters" in proc.stdout and "sample [" in proc.stdout  # banner
    assert f"test data: {metrics['test_file']}" in proc.stdout  # always says which file it read
    assert not leftovers(tmpdir)


def test_smoke_run_files_follow_the_umask(smoke_run):
    out = smoke_run[0]
    umask = os.umask(0)
    os.umask(umask)
    for path in [out / "submission.csv", out / "metrics.json", out / "adapter", out / "adapter" / "kit.json"]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == want, path


def test_progress_lines_reach_a_log_that_is_no_terminal(smoke_run):
    """stderr goes to a pipe, as on Kaggle: plain lines (AGNEWS_PROGRESS_SECONDS=0 prints one per sync)."""
    lines = [line for line in smoke_run[2].stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) >= 4 * 6  # 150 steps per epoch, a sync every 25
    pattern = r"epoch [1-4]/4 step \d+/150 \| \d+ rows/s \| loss \d+\.\d{4} \| \d+m\d\ds elapsed, ~\d+m\d\ds left"
    assert all(re.fullmatch(pattern, line) for line in lines), lines[:3]


def test_smoke_run_plots(smoke_run):
    pytest.importorskip("matplotlib")
    out, metrics, _, _ = smoke_run
    assert {"curves.png", "confusion.png"} == set(metrics["plots"])
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in metrics["plots"])


# ---------------------------------------------------------------------------------------- predict only
def test_predict_only_reproduces_predictions_and_pins_the_adapter(kernel, smoke_run, run_main, tmp_path):
    out, metrics, _, _ = smoke_run
    again = tmp_path / "again"
    shutil.copytree(out, again)  # an earlier run's plots must not pass for this run's
    adapter = out / "adapter"
    code, stdout, err = run_main("smoke=true", f"adapter_from={adapter}", f"output_dir={again}",
                                 f"adapter_sha256={kernel.adapter_digest(adapter)}")
    assert code == 0, err
    rerun = json.loads((again / "metrics.json").read_text())
    assert rerun["predict_only"] is True and rerun["history"] == [] and rerun["train_seconds"] == 0
    assert "epoch 1" not in stdout and not (again / "curves.png").exists()
    assert pd.read_csv(again / "submission.csv").equals(pd.read_csv(out / "submission.csv"))
    assert rerun["val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    code, _, err = run_main("smoke=true", f"adapter_from={adapter}", f"output_dir={tmp_path / 'wrong'}",
                            "adapter_sha256=" + "0" * 64)
    assert code == 2 and f"the adapter in {adapter} has sha256" in err and "not the adapter_sha256 0000" in err
    assert not (tmp_path / "wrong").exists()


def test_predict_only_rejects_a_folder_without_adapter(run_main, tmp_path):
    code, _, err = run_main("smoke=true", f"adapter_from={tmp_path}", f"output_dir={tmp_path / 'out'}")
    assert code == 2 and "holds no kit.json" in err


# ------------------------------------------------------------------------------------ guards that stop
def test_time_guard_stops_cleanly_and_still_predicts(kernel, run_main, tmp_path):
    code, _, err = run_main("smoke=true", "time_limit_minutes=0.0001", f"output_dir={tmp_path}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and len(metrics["history"]) == 1
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


def test_a_nan_loss_stops_the_run_and_writes_nothing(kernel, run_main, used_output, monkeypatch):
    before = snapshot(used_output)
    real_step = kernel.train_step
    calls = []

    def nan_on_step_30(*args, **kwargs):  # the hook: the loss of one step turns NaN, as on divergence
        loss = real_step(*args, **kwargs)
        calls.append(1)
        return loss * float("nan") if len(calls) == 30 else loss

    monkeypatch.setattr(kernel, "train_step", nan_on_step_30)
    code, out, err = run_main(*QUICK, f"output_dir={used_output}")
    assert code == 4 and len(calls) == 40  # caught at the next sync point: the epoch's last step, 40 of 40
    assert err.strip().splitlines()[-1] == ("error: training diverged at epoch 1 step 40: non-finite loss or "
                                            "weights (try a lower lr); no submission written")
    assert snapshot(used_output) == before


def test_non_finite_probabilities_are_refused(kernel, run_main, tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "corrected_probabilities",
                        lambda logits, *a: (np.full((len(logits), 4), np.nan), None))
    code, _, err = run_main(*QUICK, f"output_dir={tmp_path / 'out'}")
    assert code == 4 and "non-finite probabilities for 8,000 of 8,000 test rows; no submission written" in err
    assert f"the trained adapter is kept in {tmp_path / 'out' / 'adapter'}" in err  # saved before predicting
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["adapter"]


def test_one_class_training_data_is_refused_before_training(run_main, used_output, tmp_path):
    before = snapshot(used_output)
    csv = tmp_path / "train.csv"
    pd.DataFrame({"Class Index": [2] * 50, "Title": ["t"] * 50, "Description": ["match report"] * 50}).to_csv(
        csv, index=False)
    code, out, err = run_main("smoke=true", f"train_data={csv}", f"output_dir={used_output}")
    assert code == 2 and "epoch 1" not in out
    assert "every class needs at least 2 training rows" in err and "World (0), Business (0), Sci/Tech (0)" in err
    assert snapshot(used_output) == before
    code, _, err = run_main("smoke=true", "max_train_samples=5", f"output_dir={used_output}")
    assert code == 2 and "among the 5 rows of max_train_samples" in err


def test_a_failed_write_after_the_submission_keeps_it_and_says_what_is_missing(kernel, run_main, used_output,
                                                                               monkeypatch):
    real_publish = kernel.publish_file

    def disk_full_for_metrics(src, dst):  # the hook: the disk fills up while the metrics are written
        if dst.name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_publish(src, dst)

    monkeypatch.setattr(kernel, "publish_file", disk_full_for_metrics)
    old_submission = (used_output / "submission.csv").read_bytes()
    code, _, err = run_main(*QUICK, "seed=7", f"output_dir={used_output}")
    assert code == 5
    assert err.strip().splitlines()[-1] == (f"error: published {used_output / 'submission.csv'}, but not: "
                                            "metrics.json (No space left on device)")
    kernel.validate_submission(used_output / "submission.csv", 8000)
    assert (used_output / "submission.csv").read_bytes() != old_submission  # this run's submission
    assert not (used_output / "metrics.json").exists()  # the earlier run's would pass for this one's
    assert json.loads((used_output / "config.json").read_text())["seed"] == 7
    assert not [p for p in used_output.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_unknown_arguments_and_a_bad_progress_interval(kernel, run_main, capfd, monkeypatch):
    assert kernel.main(["--sett", "lr=1"]) == 2
    assert capfd.readouterr().err.strip() == ("error: unknown argument '--sett'; did you mean --set? (usage: "
                                               "agnews_lora.py [--config FILE.json] [--set KEY=VALUE ...])")
    monkeypatch.setenv("AGNEWS_PROGRESS_SECONDS", "soon")
    assert kernel.main(["--set", "smoke=true"]) == 2
    assert capfd.readouterr().err.strip() == "error: AGNEWS_PROGRESS_SECONDS must be a number of seconds >= 0, got 'soon'"
    monkeypatch.delenv("AGNEWS_PROGRESS_SECONDS")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")  # Kaggle may pass its own arguments
    assert kernel.parse_args(["-f", "/kernel.json", "--set", "lr=1"]).sets == ["lr=1"]
    assert "warning: ignoring arguments -f /kernel.json" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------- signals
def signal_smoke_run(tmp_path, prefix: str, signum: int):
    """A smoke run in a subprocess, sent `signum` once a stdout line starts with `prefix`: (status, stdout,
    stderr); its output folder is tmp_path/out, its temp folder tmp_path/tmp."""
    (tmp_path / "tmp").mkdir()
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen([sys.executable, str(KERNEL), "--set", "smoke=true", "--set",
                                 f"output_dir={tmp_path / 'out'}"], cwd=ROOT, env=kernel_env(tmp_path / "tmp"),
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(prefix):
                proc.send_signal(signum)
                break
        lines.append(proc.communicate(timeout=300)[0])
        stderr.seek(0)
        return proc.returncode, "".join(lines), stderr.read()


def test_sigterm_after_the_first_epoch_predicts_with_it(kernel, tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    code, stdout, err = signal_smoke_run(tmp_path, "epoch 1:", signal.SIGTERM)
    assert code == 143, err[-2000:]
    assert "SIGTERM: stopping at the next sync point" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["signal"] == "SIGTERM"
    assert 1 <= len(metrics["history"]) < 4  # stopped inside a later epoch, which was not evaluated
    kernel.validate_submission(out / "submission.csv", 8000)
    assert (out / "adapter" / "kit.json").is_file() and not leftovers(tmpdir)


def test_sigint_before_the_first_epoch_writes_nothing(tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    code, stdout, err = signal_smoke_run(tmp_path, "  sample [", signal.SIGINT)
    assert code == 130
    assert err.strip().splitlines()[-1] == ("error: SIGINT before the first epoch finished: no trained model to "
                                            "predict with; nothing written")
    assert not out.exists() and not leftovers(tmpdir)


# ------------------------------------------------------------------------------------ other shapes
def test_shift_options_run(kernel, run_main, tmp_path):
    code, _, err = run_main("smoke=true", "augment=0.3", "prior_correction=em_uniform", "pseudo_label_rounds=1",
                            "pseudo_label_threshold=0.7", "predict_max_length=64", "epochs=2", "max_train_samples=1600",
                            f"output_dir={tmp_path}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pseudo_label_rows"][0] > 0
    assert metrics["history"][-1]["pseudo_round"] == 1 and len(metrics["history"]) == 3
    assert len(metrics["test_prior_estimate"]) == 4 and abs(sum(metrics["test_prior_estimate"]) - 1) < 1e-3
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


def test_data_parallel_through_the_loader(kernel, smoke_run, run_main, tmp_path):
    """Two gloo processes on the CPU, the kernel imported through lorakit's loader (spawned ranks import
    agnews_lora by name): rank 0 alone writes, and the outputs match a single-process run's."""
    assert kernel.__name__ == "agnews_lora" and sys.modules["agnews_lora"] is kernel
    single_out, single, _, _ = smoke_run
    code, out, err = run_main("smoke=true", "processes=2", f"output_dir={tmp_path}")
    assert code == 0, err[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["processes"] == 2 and "x2 processes" in metrics["device"]
    assert set(metrics) == set(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in single_out.iterdir())
    assert out.count("epoch 1:") == 1  # only rank 0 reports
    assert metrics["val_accuracy"] > 0.5
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


def test_minilm_offline_run(kernel, shared_dir, minilm_path, run_main, tmp_path):
    """Real pretrained weights and real text, offline, on 400 training rows and the first 200 test rows (as a
    pickled Dataset, like the competition file) to stay fast."""
    datasets = pytest.importorskip("datasets")
    texts = kernel.load_test_texts(shared_dir / "data" / "test_unlabelled.pkl")[:200]
    test_pkl = tmp_path / "test_unlabelled.pkl"
    test_pkl.write_bytes(pickle.dumps(datasets.Dataset.from_dict({"text": texts})))
    code, _, err = run_main(f"model={minilm_path}", f"train_data={shared_dir / 'data' / 'ag_news_sample.csv'}",
                            f"test_data={test_pkl}", "epochs=1", "max_train_samples=400", "val_fraction=0.25",
                            "lr=2e-3", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    kernel.validate_submission(tmp_path / "out" / "submission.csv", 200)
    assert metrics["param_breakdown"]["head"] == 384 * 4 + 4
    assert metrics["val_accuracy"] > 0.4  # 300 rows, one epoch: well above chance (0.25)
