"""Outputs: the submission checked as written, the output folder checked before training (creatable, writable, room),
failures after training keep what was made, files follow the umask."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from kernel_helpers import ONE_ROW_PER_BATCH, QUICK, out_of_memory_after, snapshot


def write_csv(path, frame):
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"id": [0, 1], "Label": [0, 1]}), "columns must be exactly ID,Label"),
    (pd.DataFrame({"ID": [0], "Label": [0]}), "1 rows, expected 2"),
    (pd.DataFrame({"ID": [0, 0], "Label": [0, 1]}), "ID has duplicates"),
    (pd.DataFrame({"ID": [1, 2], "Label": [0, 1]}), r"IDs must be exactly 0..1"),
    (pd.DataFrame({"ID": [0, 1], "Label": [0, 4]}), "Label must be 0-3; row 1 holds 4"),
    (pd.DataFrame({"ID": [0, 1], "Label": [0.5, 1]}), "Label must hold integers"),
    (pd.DataFrame({"ID": [0, 1], "Label": ["a", 1]}), "Label must hold integers"),
    (pd.DataFrame({"ID": [0, 1], "Label": [0.0, 1.0]}), "Label must hold integers on every row; row 0 holds '0.0'"),
])
def test_submission_validation_errors(kernel, tmp_path, frame, message):
    with pytest.raises(kernel.SubmissionError, match=message):
        kernel.validate_submission(write_csv(tmp_path / "s.csv", frame), 2)


def test_write_submission_checks_what_it_wrote(kernel, tmp_path):
    path = tmp_path / "submission.csv"
    kernel.write_submission(path, np.array([3, 0, 1]))
    assert path.read_text() == "ID,Label\n0,3\n1,0\n2,1\n"
    with pytest.raises(kernel.SubmissionError, match="Label must be 0-3; row 1 holds 7"):
        kernel.write_submission(tmp_path / "bad.csv", np.array([0, 7]))


def test_an_output_dir_that_cannot_be_created_is_refused_before_training(run_main, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = run_main(*QUICK, f"output_dir={blocker / 'out'}")
    assert code == 2 and "epoch 1" not in out and "sample [" not in out
    assert err.strip().splitlines()[-1] == (f"error: output_dir {blocker / 'out'} cannot be created: {blocker} is "
                                            "not a folder; choose another with --set output_dir=PATH")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_refused_before_training(run_main, used_output):
    before = snapshot(used_output)
    used_output.chmod(0o555)
    try:
        code, out, err = run_main(*QUICK, f"output_dir={used_output}")
    finally:
        used_output.chmod(0o755)
    assert code == 2 and "epoch 1" not in out and f"output_dir {used_output} is not writable" in err
    assert snapshot(used_output) == before


@pytest.mark.slow
def test_an_output_dir_without_room_is_refused_before_training(kernel, run_main, used_output, monkeypatch):
    before = snapshot(used_output)
    real = shutil.disk_usage

    def almost_full(path):  # the hook: the disk has 1 MiB left
        return real(path)._replace(free=2**20)

    monkeypatch.setattr(kernel.shutil, "disk_usage", almost_full)
    code, out, err = run_main(*QUICK, f"output_dir={used_output}")
    assert code == 2 and "epoch 1" not in out
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: output_dir {re.escape(str(used_output))} has 1\.0 MiB free, but the outputs need "
                        r"about \d+\.\d MiB there; free some space or choose another with --set output_dir=PATH", line)
    assert snapshot(used_output) == before


@pytest.mark.slow
def test_the_estimate_covers_what_a_run_writes(kernel, smoke_run):
    out, metrics, _, _ = smoke_run
    cfg = kernel.config_from_overrides({"smoke": True})
    data = kernel.Data([], np.zeros(0), np.zeros(0), np.zeros(metrics["val_rows"]), [""] * metrics["test_rows"],
                       np.zeros(0))
    model = kernel.Model(None, None, cfg, str(out / "adapter" / "base"), metrics["param_breakdown"], generated=True)
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert written < kernel.outputs_size(cfg, data, model) < 10 * written + 4 * 2**20


@pytest.mark.slow
@pytest.mark.compat
def test_a_failure_while_predicting_keeps_the_adapter(kernel, run_main, used_output, tmp_path, monkeypatch):
    """Prediction fails after training (memory runs out whatever the batch): the adapter is in the output
    folder, said in one line with the way to predict with it, and predicting with it works."""
    restore = out_of_memory_after(monkeypatch, kernel, "keep_adapter")
    code, out, err = run_main(*QUICK, f"output_dir={used_output}")
    adapter = used_output / "adapter"
    assert code == 5 and "epoch 1:" in out
    assert err.strip().splitlines()[-1] == (
        f"error: {ONE_ROW_PER_BATCH}; the trained adapter is kept in {adapter}: predict with it using --set "
        f"adapter_from={adapter} (lorakit push --predict-from N)")
    assert f"saved the trained adapter to {adapter} before predicting" in out
    assert sorted(p.name for p in used_output.iterdir()) == ["adapter"]  # the earlier run's outputs are gone
    assert {"kit.json", "head.pt", "adapter_config.json"} <= {p.name for p in adapter.iterdir()}
    restore()
    code, out, err = run_main("smoke=true", f"adapter_from={adapter}", f"output_dir={tmp_path / 'again'}")
    assert code == 0, err[-3000:]
    kernel.validate_submission(tmp_path / "again" / "submission.csv", 8000)


@pytest.mark.slow
@pytest.mark.parametrize("on_kaggle", [False, True], ids=["elsewhere", "kaggle"])
def test_an_output_folder_that_cannot_keep_the_adapter(kernel, run_main, tmp_path, monkeypatch, on_kaggle):
    """The output folder fills up as the trained adapter is kept in it: one line names the folder's problem and
    where the adapter is kept instead (off Kaggle, a folder of its own in the temporary folder, and predicting with
    it works), or, on Kaggle, where nothing else outlives the session, says plainly that it is lost."""
    real_publish = kernel.publish_file

    def full_output_folder(src, dst):  # the hook: the output folder has no room for the adapter
        if dst.name == "adapter":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_publish(src, dst)

    monkeypatch.setattr(kernel, "publish_file", full_output_folder)
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", "1" if on_kaggle else "0")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(kernel.tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    out = tmp_path / "out"
    code, stdout, err = run_main(*QUICK, f"output_dir={out}")
    last = err.strip().splitlines()[-1]
    assert code == 5 and "epoch 1:" in stdout and "Traceback" not in err
    problem = f"error: cannot keep the trained adapter in {out}: No space left on device ({out / 'adapter'}); "
    if on_kaggle:
        assert last == problem + ("on Kaggle nothing but /kaggle/working outlives the session, so the trained "
                                  "adapter could not be kept: fix the output folder (free space in it) and run again")
        assert not list(tmp_path.glob("agnews_lora*"))
        return
    kept = next(tmp_path.glob("agnews_lora_adapter_*")) / "adapter"
    assert last == problem + f"the trained adapter is kept in {kept} instead: predict with it using --set " \
                             f"adapter_from={kept}"
    assert {"kit.json", "head.pt", "adapter_config.json", "base"} <= {p.name for p in kept.iterdir()}
    assert [p.name for p in tmp_path.glob("agnews_lora*")] == [kept.parent.name]  # the run's own folder is gone
    monkeypatch.setattr(kernel, "publish_file", real_publish)
    code, _, err = run_main("smoke=true", f"adapter_from={kept}", f"output_dir={tmp_path / 'again'}")
    assert code == 0, err[-3000:]
    kernel.validate_submission(tmp_path / "again" / "submission.csv", 8000)


@pytest.mark.slow
def test_a_full_disk_while_staging_is_one_line_and_keeps_the_adapter(kernel, run_main, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):  # the hook: the temporary folder fills up while the outputs are written
        raise OSError(28, "No space left on device", "probabilities.csv")

    monkeypatch.setattr(kernel, "write_submission", disk_full)
    code, _, err = run_main(*QUICK, f"output_dir={tmp_path}")
    assert code == 5 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: cannot write the outputs: No space left on device "
                                                   f"(probabilities.csv); the trained adapter is kept in {tmp_path}")
    assert (tmp_path / "adapter" / "kit.json").is_file() and not (tmp_path / "submission.csv").exists()


@pytest.mark.slow
def test_a_failed_write_after_the_submission_keeps_it_and_says_what_is_missing(kernel, run_main, used_output,
                                                                               monkeypatch):
    real_publish = kernel.publish_file

    def disk_full_after_predicting(src, dst):  # the hook: the disk fills up for the metrics and the adapter
        if dst.name == "metrics.json" or "adapter" in dst.parts[-2:] and "before" not in keep_adapter_done:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_publish(src, dst)

    keep_adapter_done = []
    real_keep = kernel.keep_adapter

    def keep_adapter(*args):  # the adapter kept before predicting is published as usual
        keep_adapter_done.append("before")
        try:
            return real_keep(*args)
        finally:
            keep_adapter_done.clear()

    monkeypatch.setattr(kernel, "publish_file", disk_full_after_predicting)
    monkeypatch.setattr(kernel, "keep_adapter", keep_adapter)
    old_submission = (used_output / "submission.csv").read_bytes()
    code, _, err = run_main(*QUICK, "seed=7", f"output_dir={used_output}")
    assert code == 5
    assert err.strip().splitlines()[-1] == (f"error: published {used_output / 'submission.csv'}, but not: "
                                            "metrics.json (No space left on device), "
                                            "adapter (No space left on device)")
    kit = json.loads((used_output / "adapter" / "kit.json").read_text())  # the adapter kept before predicting
    assert kit["config"]["seed"] == 7 and kit["temperature"] is None
    assert {"head.pt", "adapter_config.json"} <= {p.name for p in (used_output / "adapter").iterdir()}
    kernel.validate_submission(used_output / "submission.csv", 8000)
    assert (used_output / "submission.csv").read_bytes() != old_submission  # this run's submission
    assert not (used_output / "metrics.json").exists()  # the earlier run's would pass for this one's
    assert json.loads((used_output / "config.json").read_text())["seed"] == 7
    assert not [p for p in used_output.iterdir() if p.name.startswith(".")]  # no temporary leftovers


@pytest.mark.slow
def test_smoke_run_files_follow_the_umask(smoke_run):
    out = smoke_run[0]
    umask = os.umask(0)
    os.umask(umask)
    for path in [out / "submission.csv", out / "metrics.json", out / "adapter", out / "adapter" / "kit.json"]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == want, path


@pytest.mark.slow
def test_smoke_run_plots(smoke_run):
    pytest.importorskip("matplotlib")
    out, metrics, _, _ = smoke_run
    assert {"curves.png", "confusion.png"} == set(metrics["plots"])
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in metrics["plots"])
