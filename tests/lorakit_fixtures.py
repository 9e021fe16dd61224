"""Helpers for lorakit's tests, imported explicitly (the fixtures built on them, `kit` and `kaggle_imported`, are in
conftest.py): an isolated repo copy with dummy credentials and the stand-in Kaggle server (docs/generate.py uses
it too), the Kit a test drives the CLI with, and what several test files share."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from kaggle_standin import StandinServer


REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if SRC.is_dir() and str(SRC) not in sys.path:  # works before `pip install -e .` too
    sys.path.insert(0, str(SRC))

# lorakit from this checkout's src/, which the statement above puts on sys.path
from lorakit import ledger as ledger_module
from lorakit.kernel import params_counted

USERNAME = "alice"
SECRET = "sekrit-key-0123456789"
COMPETITION = "deep-learning-spring-2025-project-2"
FALLBACK_METADATA = {
    "id": "YOUR_KAGGLE_USERNAME/agnews-lora",
    "title": "agnews-lora",
    "code_file": "kernel/agnews_lora.py",
    "language": "python",
    "kernel_type": "script",
    "is_private": True,
    "enable_gpu": True,
    "enable_tpu": False,
    "enable_internet": False,
    "dataset_sources": [],
    "competition_sources": [COMPETITION],
    "kernel_sources": [],
    "model_sources": [],
}
ENV_CLEARED = (
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_API_TOKEN",
    "KAGGLE_API_V1_TOKEN",
    "KAGGLE_KERNEL_RUN_TYPE",
    "NO_PROXY",
    "no_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "LORAKIT_VERBOSE",
    "LORAKIT_DEBUG",
    "VERBOSE",
    "VERBOSE_OUTPUT",
)


def _labels_csv(n: int) -> bytes:
    lines = ["ID,Label"] + [f"{i},{(i * 7) % 4}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def _probabilities_csv(n: int) -> bytes:
    lines = ["ID,p_0,p_1,p_2,p_3"]
    for i in range(n):
        k = (i * 7) % 4
        p = [0.1, 0.1, 0.1, 0.1]
        p[k] = 0.7
        lines.append(f"{i}," + ",".join(f"{v:.6f}" for v in p))
    return ("\n".join(lines) + "\n").encode()


class Kit:
    """What a test needs: the repo copy, the server state, and `run` to invoke the CLI in-process."""

    def __init__(self, repo: Path, server: StandinServer, capsys):
        self.repo = repo
        self.server = server
        self.state = server.state
        self._capsys = capsys
        # the validation accuracy fake_run gives a run: of its config (the kernel's Config) and version number
        self.accuracy = lambda cfg, number: 0.9 + number / 1000
        self.epochs = 2  # the epochs of a fake run's history and loss curve

    def run(self, *argv):
        from lorakit.cli import main

        self._capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    @property
    def metadata(self) -> dict:
        return json.loads((self.repo / "kernel-metadata.json").read_text(encoding="utf-8"))

    @property
    def slug(self) -> str:
        return self.metadata["id"].split("/")[1]

    @property
    def ledger(self) -> Path:
        return self.repo / "submissions" / "ledger.csv"

    def rows(self) -> list:
        with open(self.ledger, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def row(self, version: int) -> dict:
        return next(r for r in self.rows() if int(r["version"]) == version)

    def kmod(self):
        from lorakit.kernel import kernel_module_load

        return kernel_module_load(self.repo / "kernel" / "agnews_lora.py")

    def fake_run(self, text: str, number: int, test_rows: int = 8000):
        """The outputs a kernel run would leave, for the config that ``text`` carries: a smoke config's run
        predicted on synthetic data, any other on the competition's test file (as the kernel records it).
        Its validation slice (ids and labels) follows the config's seed and val_fraction, as the kernel's does;
        which rows it gets right follows its config_hash and version, with ``self.accuracy`` of them right."""
        kmod = self.kmod()
        block = kmod.read_overrides_block(text)
        cfg = kmod.config_from_overrides(block)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            breakdown = params_counted(kmod, cfg)
        val = fake_validation(cfg.seed, cfg.val_fraction, kmod.config_hash(cfg) + str(number),
                              self.accuracy(cfg, number))
        metrics = {
            "config_hash": kmod.config_hash(cfg),
            "trainable_params": breakdown["total"],
            "param_breakdown": breakdown,
            "val_accuracy": float(val["correct"].mean()),
            "val_rows": len(val["ids"]),
            "per_class_val_accuracy": {name: float(val["correct"][val["labels"] == k].mean())
                                       for k, name in enumerate(kmod.LABELS)},
            "history": [{"epoch": e, "train_loss": 0.6 - 0.1 * e, "val_loss": 0.4 - 0.05 * e,
                         "val_accuracy": 0.86 + 0.02 * e} for e in range(1, self.epochs + 1)],
            "loss_curve": fake_loss_curve(self.epochs, number),
            "best_epoch": self.epochs,
            "interrupted": False,
            "signal": None,
            "train_seconds": 1200.0,
            "predict_seconds": 60.0,
            "total_seconds": 1290.0,
            "test_rows": test_rows,
            "test_label_distribution": {"World": 2000, "Sports": 2000, "Business": 2000, "Sci/Tech": 2000},
            "device": "cuda:0 (Tesla T4)",
            "versions": {"torch": "2.x"},
            "config": dataclasses.asdict(cfg),
            "predicted_on": {"kind": "smoke" if cfg.smoke else "competition",
                             "path": "smoke_test.pkl" if cfg.smoke else f"/kaggle/input/{COMPETITION}/test_unlabelled.pkl",
                             "sha256": "0" * 64, "rows": test_rows},
        }
        outputs = {
            "submission.csv": _labels_csv(test_rows),
            "probabilities.csv": _probabilities_csv(test_rows),
            "logits.npz": _logits_npz(val, test_rows),
            "metrics.json": json.dumps(metrics, indent=2).encode(),
            "config.json": json.dumps({"config_hash": metrics["config_hash"]}).encode(),
            "adapter/adapter_config.json": b'{"r": %d}' % cfg.lora_r,
            "adapter/adapter_model.safetensors": os.urandom(2048),
            "adapter/head.pt": os.urandom(512),
            "adapter/kit.json": json.dumps({"config": dataclasses.asdict(cfg), "temperature": 1.0,
                                            "hidden_size": 768}).encode(),  # roberta-base's width
            "training_curves.png": b"\x89PNG\r\n\x1a\n" + os.urandom(256),
        }
        log = json.dumps(
            [
                {"stream_name": "stdout", "time": 1.5, "data": "effective config:\n"},
                {"stream_name": "stdout", "time": 2.0, "data": f"trainable parameters {breakdown['total']:,}"},
                {"stream_name": "stderr", "time": 3.0, "data": "epoch 1/1 val_accuracy 0.9000\n"},
            ]
        )
        return outputs, log


FAKE_STEPS = 60  # a fake run's optimizer steps per epoch


def fake_loss_curve(epochs: int, number: int) -> list:
    """metrics.json's loss_curve as the kernel writes it: a point every 25 optimizer steps and one at each
    epoch's end, the mean training loss since the point before (falling, and a little lower for later versions)."""
    steps = sorted({s for s in range(25, epochs * FAKE_STEPS + 1, 25)} | {e * FAKE_STEPS for e in range(1, epochs + 1)})
    return [{"step": s, "epoch": round(s / FAKE_STEPS, 4), "loss": round(1.2 / (1 + s / 40) + 0.2 - number / 100, 4)}
            for s in steps]


FAKE_SOURCE_ROWS = 120_000  # AG News' training split


def fake_validation(seed: int, val_fraction: float, salt: str, accuracy: float, rows: int = 2000) -> dict:
    """A fake run's validation slice: ``rows`` ids of the training source and their labels, fixed by seed and
    val_fraction (as the kernel's slice is), and which of them the run got right (``accuracy`` of them,
    chosen by ``salt``). ``sha256`` is the kernel's digest of the slice (Data.val_ids_sha256)."""
    import hashlib

    import numpy as np

    slice_rng = np.random.default_rng([seed, int(round(val_fraction * 1e6))])
    ids = np.sort(slice_rng.choice(FAKE_SOURCE_ROWS, size=rows, replace=False)).astype(np.int64)
    labels = (ids * 7 % 4).astype(np.int64)
    right = np.zeros(rows, dtype=bool)
    salt_rng = np.random.default_rng(int(hashlib.sha256(salt.encode()).hexdigest()[:12], 16))
    right[salt_rng.permutation(rows)[: int(round(accuracy * rows))]] = True
    sha = hashlib.sha256(ids.tobytes() + labels.tobytes()).hexdigest()
    return {"ids": ids, "labels": labels, "correct": right, "sha256": sha}


def fake_logits(labels, correct):
    """Validation logits whose argmax is the label where ``correct``, the next class elsewhere."""
    import numpy as np

    predicted = np.where(correct, labels, (labels + 1) % 4)
    logits = np.zeros((len(labels), 4), dtype=np.float32)
    logits[np.arange(len(labels)), predicted] = 3.0
    return logits


def _logits_npz(val: dict, test_rows: int) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, val_logits=fake_logits(val["labels"], val["correct"]), val_labels=val["labels"],
                        val_ids=val["ids"], val_ids_sha256=val["sha256"],
                        test_logits=np.zeros((test_rows, 4), dtype=np.float32),
                        train_prior=np.full(4, 0.25), temperature=1.0)
    return buffer.getvalue()


# What every lorakit session against the stand-in sets: fast retries and polls, short timeouts.
FAST_ENV = {
    "LORAKIT_RETRY_BASE_S": "0.01",
    "LORAKIT_RETRY_MAX_DELAY_S": "2",
    "LORAKIT_RETRY_TOTAL_S": "5",
    "LORAKIT_RETRY_ATTEMPTS": "4",
    "LORAKIT_DOWNLOAD_RETRIES": "0",
    "LORAKIT_POLL_START_S": "0",
    "LORAKIT_POLL_MAX_S": "0",
    "LORAKIT_TIMEOUT_S": "5",
    "LORAKIT_CONFIRM_S": "0.5",
    "LORAKIT_LOCK_WAIT_S": "30",
}


@contextlib.contextmanager
def standin_server(tmp: Path, lifetime: float = 300):
    """An isolated repo copy in ``tmp``, dummy credentials in a private KAGGLE_CONFIG_DIR and a running
    stand-in, which stops itself after ``lifetime`` seconds; yields (repo, server, env): the variables that
    point the real kaggle client at the stand-in (the caller sets them, removes ENV_CLEARED and works in
    ``repo``). The kit fixture and docs/generate.py use it."""
    repo = tmp / "repo"
    (repo / "kernel").mkdir(parents=True)
    shutil.copy2(REPO / "kernel" / "agnews_lora.py", repo / "kernel" / "agnews_lora.py")
    metadata = REPO / "kernel-metadata.json"
    if metadata.is_file():
        shutil.copy2(metadata, repo / "kernel-metadata.json")
    else:
        (repo / "kernel-metadata.json").write_text(json.dumps(FALLBACK_METADATA, indent=2), encoding="utf-8")
    config = tmp / "kaggle-config"
    config.mkdir()
    creds = config / "kaggle.json"
    creds.write_text(json.dumps({"username": USERNAME, "key": SECRET}), encoding="utf-8")
    creds.chmod(0o600)
    home = tmp / "home"
    home.mkdir()
    server = StandinServer(USERNAME, SECRET, COMPETITION, lifetime=lifetime).start()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "KAGGLE_CONFIG_DIR": str(config),
           "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": server.url, "http_proxy": server.url, **FAST_ENV}
    try:
        yield repo, server, env
    finally:
        server.stop()


def push(kit, *extra, message="baseline"):
    code, out, err = kit.run("push", "-m", message, *extra)
    assert code == 0, err
    return out, err


def push_pull(kit, *extra):
    push(kit, *extra)
    version = len(kit.rows())
    assert kit.run("status", version, "--wait")[0] == 0
    code, out, err = kit.run("pull", version)
    assert code == 0, err
    return version


def kernel_run(text: str, number: int) -> tuple:
    """The stand-in's run hook for a real run: the pushed script itself, run here offline (a quick smoke
    configuration), and what Kaggle would keep of it: the files of its output folder and its log."""
    with tempfile.TemporaryDirectory(prefix="standin-run-") as tmp:
        script, out = Path(tmp) / "agnews_lora.py", Path(tmp) / "working"
        script.write_text(text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_PROXY", "_proxy"))}
        env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "AGNEWS_ON_KAGGLE": "0"})
        proc = subprocess.run([sys.executable, str(script), "--set", f"output_dir={out}"], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=600)
        outputs = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        lines = (proc.stdout + proc.stderr).splitlines(keepends=True)
        log = [{"stream_name": "stdout", "time": float(i), "data": line} for i, line in enumerate(lines)]
        return outputs, json.dumps(log)


def ledger_write(kit, rows: list) -> bytes:
    """The ledger holding ``rows`` (as edited by hand); its bytes."""
    with open(kit.ledger, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return kit.ledger.read_bytes()


def no_secret(*texts):
    for text in texts:
        assert SECRET not in text


TOKEN = "kgat_0123456789abcdef0123"  # an access token the stand-in knows (tests add it to state.tokens)


def versions(kit, slug=None) -> list:
    return kit.state.versions(USERNAME, slug or kit.slug)


def error_line(err: str, kind: str = "error") -> str:
    """The one `lorakit: <kind>:` line of ``err`` (there must be exactly one, and no traceback)."""
    lines = [line for line in err.strip().splitlines() if line.startswith(f"lorakit: {kind}:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def lorakit_started(kit, *argv) -> subprocess.Popen:
    """A real lorakit process (its own signal handlers), with a long request timeout: the test signals it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LORAKIT_TIMEOUT_S": "120", "LORAKIT_RETRY_TOTAL_S": "120"}
    return subprocess.Popen([sys.executable, "-m", "lorakit", *map(str, argv)], cwd=kit.repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signalled_in_flight(kit, proc: subprocess.Popen, held, signum: int) -> tuple:
    """Send ``signum`` once ``held()`` says the request is held open by the stand-in; (exit code, stderr)."""
    deadline = time.monotonic() + 60
    while not held():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.2)  # the request is read and held
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


SIGNALS = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


def full_disk_after(monkeypatch, kit, method: str, skip: int = 0) -> None:
    """Every ledger write fails with ENOSPC once ``method`` has been sent (after the first ``skip`` times)."""
    write = ledger_module.Ledger._write

    def failing(self, columns, records):
        if len(kit.state.calls(method)) > skip:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(self, columns, records)

    monkeypatch.setattr(ledger_module.Ledger, "_write", failing)


def one_document(out: str) -> dict:
    assert len(out.strip().splitlines()) == 1, out
    return json.loads(out)


PORTAL = "not Kaggle's API: a captive portal or proxy?"
