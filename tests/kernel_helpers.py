"""Helpers for the kernel's tests, imported explicitly: paths, the environment of a kernel run, the script run as
Kaggle runs it, and what several test files share."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel" / "agnews_lora.py"
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT / "src") not in sys.path:  # lorakit's loader, before `pip install -e .` too
    sys.path.insert(0, str(ROOT / "src"))


def kernel_env(tmpdir: Path | None = None, on_kaggle: bool = False, **extra: str) -> dict:
    """The environment of a kernel run here: offline, no tqdm, on Kaggle or not as said (AGNEWS_ON_KAGGLE, which wins
    over Kaggle's markers), temp files in `tmpdir`."""
    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_KERNEL_RUN_TYPE"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
                "AGNEWS_ON_KAGGLE": "1" if on_kaggle else "0", **extra})
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def run_kernel(*sets: str, cwd: Path = ROOT, timeout: int = 600, tmpdir: Path | None = None,
               env: dict | None = None, args: tuple = ()) -> subprocess.CompletedProcess:
    """The script as Kaggle runs it: a subprocess, offline."""
    argv = [sys.executable, str(KERNEL), *args]
    for item in sets:
        argv += ["--set", item]
    return subprocess.run(argv, cwd=cwd, env=env or kernel_env(tmpdir), capture_output=True, text=True,
                          timeout=timeout)


# Each value breaks exactly one rule; the same table drives `lorakit check` in test_lorakit_check.py.
BAD_VALUES = [
    ("lora_alpha", "nan", "lora_alpha must be a finite number in (0, inf)"),
    ("lora_alpha", "-1e30", "lora_alpha must be a finite number in (0, inf)"),
    ("lr", "nan", "lr must be a finite number in [1e-06, 1]"),
    ("lr", "inf", "lr must be a finite number in [1e-06, 1]"),
    ("lr", "0", "lr must be a finite number in [1e-06, 1]"),
    ("lr", "1e-320", "lr must be a finite number in [1e-06, 1], got 1e-320"),  # learns nothing: one class
    ("weight_decay", "1e9", "weight_decay must be a finite number in [0, 1]"),
    ("grad_clip", "1e-30", "grad_clip must be 0 (off) or >= 0.01, got 1e-30"),
    ("eval_batch_size", "100000", "eval_batch_size must be a finite number in [1, 1024]"),
    ("seed", "-1", "seed must be a finite number in [0, 4294967296)"),
    ("seed", "4294967296", "seed must be a finite number in [0, 4294967296)"),
    ("weight_decay", "-5", "weight_decay must be a finite number in [0, 1]"),
    ("warmup_ratio", "7", "warmup_ratio must be a finite number in [0, 1)"),
    ("warmup_ratio", "1", "warmup_ratio must be a finite number in [0, 1)"),
    ("grad_clip", "-inf", "grad_clip must be a finite number in [0, inf)"),
    ("time_limit_minutes", "nan", "time_limit_minutes must be a finite number in (0, inf)"),
    ("val_fraction", "0.9", "val_fraction must be a finite number in (0, 0.5]"),
    ("lora_dropout", "1", "lora_dropout must be a finite number in [0, 1)"),
    ("augment", "1.5", "augment must be a finite number in [0, 1]"),
    ("pseudo_label_threshold", "0", "pseudo_label_threshold must be a finite number in (0, 1]"),
    ("epochs", "0", "epochs must be a finite number in [1, inf)"),
    ("max_length", "4", "max_length must be a finite number in [8, inf)"),
    ("max_length", "1000", "max_length must be <= 512, the usable positions of roberta-base"),
    ("predict_max_length", "1000", "predict_max_length must be <= 512, the usable positions of roberta-base"),
    ("predict_max_length", "5", "predict_max_length must be 0 (= max_length) or >= 8"),
    ("adapter_sha256", "abc", "adapter_sha256 must be 64 lowercase hex digits"),
    ("model", " ", "model must not be empty"),
]


ONE_ROW_PER_BATCH = "validate: out of memory with one row per batch; lower predict_max_length"


def write_train_csv(path: Path, rows_per_class: int = 12, broken: int = 0) -> Path:
    """A small AG News-layout CSV whose classes the smoke keywords separate; `broken` rows carry bytes that are
    not UTF-8 (a lone surrogate, as a careless encoder writes it)."""
    words = ("election minister", "striker playoff", "earnings merger", "software chip")
    lines = ["Class Index,Title,Description"]
    for i in range(rows_per_class * 4):
        lines.append(f"{i % 4 + 1},{words[i % 4]} today,the {words[i % 4]} report {i}")
    data = "\n".join(lines).encode() + b"\n"
    for i in range(broken):
        data += f"{i % 4 + 1},broken ".encode() + "\ud800".encode("utf-8", "surrogatepass") + b",row\n"
    path.write_bytes(data)
    return path


def write_test_pickle(path: Path, rows: int = 60, broken: int = 0) -> Path:
    texts = [f"the {w} story {i}" for i, w in zip(range(rows), ["election", "striker", "merger", "chip"] * rows)]
    for i in range(broken):
        texts[i] = f"a lone surrogate \ud800 in row {i} \udfff"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"text": texts}))
    return path


QUICK = ("smoke=true", "epochs=1", "max_train_samples=800")  # about 5 s in-process


def snapshot(folder):
    """Every file under `folder` with its bytes: a failed run must leave this unchanged."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def out_of_memory_after(monkeypatch, kernel, hook: str):
    """From the moment the kernel's function ``hook`` has run, every Classifier forward runs out of memory, as
    on a GPU whose memory no prediction batch fits; returns what puts both back."""
    import torch

    real_hook, real_forward, ran = getattr(kernel, hook), kernel.Classifier.forward, []

    def hooked(*args):
        result = real_hook(*args)
        ran.append(True)
        return result

    def forward(self, ids, mask):
        if ran:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_forward(self, ids, mask)

    monkeypatch.setattr(kernel, hook, hooked)
    monkeypatch.setattr(kernel.Classifier, "forward", forward)

    def restore() -> None:
        monkeypatch.setattr(kernel, hook, real_hook)
        monkeypatch.setattr(kernel.Classifier, "forward", real_forward)

    return restore


def assert_loss_curve(metrics: dict, steps: int, sync: int = 25) -> None:
    """metrics.json's loss_curve as COMMON.md defines it: a point every `sync` steps and at each epoch's end (`steps`
    per epoch and rank), its epoch the fraction of epochs done, its loss the mean since the previous point; weighted
    by the steps they cover, an epoch's points give that epoch's train_loss (all ranks', the same way)."""
    curve, history = metrics["loss_curve"], metrics["history"]
    ends = [*range(sync, steps, sync), steps]
    assert [p["step"] for p in curve] == [e * steps + s for e in range(len(history)) for s in ends]
    assert [p["epoch"] for p in curve] == [round(p["step"] / steps, 4) for p in curve]
    assert all(isinstance(p["loss"], float) and 0 < p["loss"] < 10 for p in curve)
    widths = [b - a for a, b in zip([0, *ends], ends)]
    for e, epoch in enumerate(history):
        points = curve[e * len(ends):(e + 1) * len(ends)]
        mean = sum(p["loss"] * w for p, w in zip(points, widths)) / steps
        assert abs(mean - epoch["train_loss"]) < 1e-4, (e, mean, epoch["train_loss"])
