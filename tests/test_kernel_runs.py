"""Whole kernel runs, offline (smoke mode: a tiny random encoder on synthetic data; MiniLM for real weights): what a
run says and writes, signals, data parallel, the GPU check."""
from __future__ import annotations

import json
import pickle
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from kernel_helpers import KERNEL, ROOT, assert_loss_curve, kernel_env


METRIC_KEYS = {
    "trainable_params", "param_breakdown", "val_accuracy", "history", "train_seconds", "train_samples_per_second",
    "tokens_per_second", "predict_seconds", "test_rows", "test_label_distribution", "device", "versions",
    "config_hash", "interrupted", "signal", "test_file", "predicted_on", "model",
}


def leftovers(tmpdir) -> list:
    """The kernel's temporary folders still in `tmpdir` (torch keeps a compile cache there too)."""
    return [p.name for p in tmpdir.iterdir() if p.name.startswith("agnews_")]


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


@pytest.mark.slow
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
    with np.load(out / "logits.npz") as logits:  # validation predictions that pair with another run's
        ids, labels = logits["val_ids"], logits["val_labels"]
        assert len(ids) == len(labels) == len(logits["val_logits"]) == len(set(ids.tolist())) > 0
        assert str(logits["val_ids_sha256"]) == kernel.hashlib.sha256(
            ids.astype(np.int64).tobytes() + labels.astype(np.int64).tobytes()).hexdigest()
    probs = pd.read_csv(out / "probabilities.csv")
    assert probs["ID"].tolist() == list(range(8000))
    assert np.allclose(probs[[f"p_{i}" for i in range(4)]].sum(axis=1), 1.0, atol=1e-4)
    labels = pd.read_csv(out / "submission.csv")["Label"].to_numpy()
    assert (probs[[f"p_{i}" for i in range(4)]].to_numpy().argmax(1) == labels).all()
    assert {"adapter_config.json", "head.pt", "kit.json"} <= {p.name for p in (out / "adapter").iterdir()}
    assert "trainable parameters" in proc.stdout and "sample [" in proc.stdout  # banner
    assert f"test data: {metrics['test_file']}" in proc.stdout  # always says which file it read
    assert not leftovers(tmpdir)


@pytest.mark.slow
@pytest.mark.compat
def test_a_smoke_run_says_so_loudly(smoke_run):
    out, metrics, proc, _ = smoke_run
    on = metrics["predicted_on"]
    assert set(on) == {"kind", "path", "sha256", "rows"} and on["kind"] == "smoke" and on["rows"] == 8000
    assert re.fullmatch(r"[0-9a-f]{64}", on["sha256"]) and on["path"].endswith("test_unlabelled.pkl")
    notice = "SMOKE RUN: tiny random encoder, synthetic data -- not a submission"
    assert proc.stdout.count(notice) == 3  # before the config, in the banner, in the summary
    assert proc.stdout.strip().splitlines()[-1] == notice
    assert metrics["model"] == "tiny random encoder (smoke run), not roberta-base"
    assert "  model tiny random encoder (smoke run), not roberta-base" in proc.stdout


@pytest.mark.slow
def test_progress_lines_reach_a_log_that_is_no_terminal(smoke_run):
    """stderr goes to a pipe, as on Kaggle: plain lines (AGNEWS_PROGRESS_SECONDS=0 prints one per sync)."""
    lines = [line for line in smoke_run[2].stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) >= 4 * 6  # 150 steps per epoch, a sync every 25
    pattern = r"epoch [1-4]/4 step \d+/150 \| \d+ rows/s \| loss \d+\.\d{4} \| \d+m\d\ds elapsed, ~\d+m\d\ds left"
    assert all(re.fullmatch(pattern, line) for line in lines), lines[:3]


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigint_before_the_first_epoch_writes_nothing(tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    code, stdout, err = signal_smoke_run(tmp_path, "  sample [", signal.SIGINT)
    assert code == 130
    assert err.strip().splitlines()[-1] == ("error: SIGINT before the first epoch finished: no trained model to "
                                            "predict with; nothing written")
    assert not out.exists() and not leftovers(tmpdir)


def test_gpu_support_follows_the_torch_build(kernel, monkeypatch):
    arches = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    assert kernel.gpu_supported((7, 5), arches)  # T4
    assert kernel.gpu_supported((8, 9), arches)  # same major, newer minor: sm_86 cubins run
    assert not kernel.gpu_supported((6, 0), arches)  # P100 on a build without sm_60
    assert kernel.gpu_supported((6, 0), ["sm_50", "compute_50"])  # PTX JIT-compiles forward
    assert kernel.gpu_supported((12, 0), ["sm_90", "sm_100", "compute_120"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arches)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla P100-PCIE-16GB")
    with pytest.raises(kernel.KernelError, match=r"this GPU \(Tesla P100-PCIE-16GB, compute capability 6.0\) "
                                                 r"cannot run torch .*pick the accelerator 'GPU T4 x2'"):
        kernel.accelerator()


@pytest.mark.slow
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
    assert_loss_curve(metrics, 75)  # 150 batches an epoch, 75 for each rank; the points are both ranks' means
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


@pytest.mark.slow
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
