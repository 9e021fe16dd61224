"""What the kernel checks before training (so that nothing fails after it), what it says it predicted on, and
what a failure after training leaves. Kernel runs are smoke runs (tiny random encoder) unless real weights matter
(MiniLM, offline); faults are injected through the kernel's own functions, as in test_kernel_runs.py."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, kernel_env, run_kernel
from test_kernel_runs import QUICK, run_main, snapshot, used_output  # noqa: F401 (fixtures)

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


# ------------------------------------------------------------------------------------ what it predicted on
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


def test_the_kind_of_test_file(kernel, tmp_path, monkeypatch, capsys):
    """competition: the file at the competition's mount path, however it was named; other: anything else, with a
    warning when the competition is not attached and another dataset's file is taken."""
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    train = write_train_csv(tmp_path / "train.csv")
    root = tmp_path / "input"
    monkeypatch.setattr(kernel, "KAGGLE_INPUT", root)
    cfg = kernel.Config(train_data=str(train))
    for own in kernel.competition_test_files(root):
        write_test_pickle(own)
        inputs = kernel.resolve_inputs(cfg, tmp_path)
        assert (inputs.test, inputs.test_kind) == (own, "competition")
        assert inputs.predicted_on(60) == {"kind": "competition", "path": str(own),
                                           "sha256": kernel.file_sha256(own), "rows": 60}
        explicit = kernel.resolve_inputs(kernel.dataclasses.replace(cfg, test_data=str(own)), tmp_path)
        assert explicit.test_kind == "competition"
        own.unlink()
    assert "not attached" not in capsys.readouterr().err
    other = write_test_pickle(root / "someone-else" / "test_unlabelled.pkl")
    inputs = kernel.resolve_inputs(cfg, tmp_path)
    assert (inputs.test, inputs.test_kind) == (other, "other")
    assert (f"warning: the competition {kernel.COMPETITION} is not attached: reading {other}, another dataset's "
            "file; attach the competition (competition_sources) before submitting") in capsys.readouterr().err
    assert "NOT the competition's file" in inputs.describe()
    smoke = kernel.resolve_inputs(kernel.config_from_overrides({"smoke": True, "test_data": str(other)}), tmp_path)
    assert smoke.test_kind == "smoke" and smoke.describe() == (
        f"SMOKE RUN: tiny random encoder, test data {other} -- not a submission")


def test_real_weights_on_the_competition_file_with_invalid_unicode(kernel, minilm_path, run_main, tmp_path,
                                                                   monkeypatch):
    """The real path (pretrained weights, not smoke): the competition's file at its mount path, with rows that
    are not valid Unicode in the test pickle and the training CSV, repaired and counted."""
    root = tmp_path / "input"
    test_file = write_test_pickle(kernel.competition_test_files(root)[0], rows=60, broken=3)
    monkeypatch.setattr(kernel, "KAGGLE_INPUT", root)
    train = write_train_csv(tmp_path / "train.csv", broken=2)
    code, out, err = run_main(f"model={minilm_path}", f"train_data={train}", "epochs=1", "val_fraction=0.25",
                              f"output_dir={tmp_path / 'out'}")
    assert code == 0, err[-3000:]
    assert "warning: 3 test row(s) were not valid Unicode; the invalid characters became U+FFFD" in err
    assert f"warning: 2 line(s) of {train} were not valid UTF-8; the invalid bytes became U+FFFD" in err
    assert "Traceback" not in err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["predicted_on"] == {"kind": "competition", "path": str(test_file),
                                       "sha256": kernel.file_sha256(test_file), "rows": 60}
    assert metrics["model"] == str(minilm_path) and "SMOKE" not in out
    assert f"predicting on {test_file} (the competition's test file, sha256 " in out.strip().splitlines()[-1]
    kernel.validate_submission(tmp_path / "out" / "submission.csv", 60)


def test_invalid_unicode_on_the_smoke_path(run_main, tmp_path):
    test_pkl = write_test_pickle(tmp_path / "test.pkl", rows=50, broken=4)
    train = write_train_csv(tmp_path / "train.csv", rows_per_class=30, broken=1)
    code, _, err = run_main("smoke=true", "epochs=1", f"train_data={train}", f"test_data={test_pkl}",
                            f"output_dir={tmp_path / 'out'}")
    assert code == 0, err[-3000:]
    assert "warning: 4 test row(s) were not valid Unicode" in err and f"1 line(s) of {train} were not valid" in err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["predicted_on"]["kind"] == "smoke"


def test_clean_text_repairs_lone_surrogates(kernel):
    assert kernel.clean_text("a\ud800b \udfff") == "a\ufffdb \ufffd"
    assert kernel.clean_text("Zürich 日本 \ufffd") == "Zürich 日本 \ufffd"  # valid text is untouched


# ------------------------------------------------------------------------------------ the output folder
def test_an_output_dir_that_cannot_be_created_is_refused_before_training(run_main, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = run_main(*QUICK, f"output_dir={blocker / 'out'}")
    assert code == 2 and "epoch 1" not in out and "sample [" not in out
    assert err.strip().splitlines()[-1] == (f"error: output_dir {blocker / 'out'} cannot be created: {blocker} is "
                                            "not a folder; choose another with --set output_dir=PATH")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


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


def test_the_estimate_covers_what_a_run_writes(kernel, smoke_run):
    out, metrics, _, _ = smoke_run
    cfg = kernel.config_from_overrides({"smoke": True})
    data = kernel.Data([], np.zeros(0), np.zeros(0), np.zeros(metrics["val_rows"]), [""] * metrics["test_rows"])
    model = kernel.Model(None, None, cfg, str(out / "adapter" / "base"), metrics["param_breakdown"], generated=True)
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert written < kernel.outputs_size(cfg, data, model) < 10 * written + 4 * 2**20


# ------------------------------------------------------------------------------------------- the model
@pytest.mark.compat
def test_a_missing_model_offline_is_one_line(tmp_path):
    train = write_train_csv(tmp_path / "train.csv")
    test_pkl = write_test_pickle(tmp_path / "test.pkl")
    sets = ("model=roberta-base", f"train_data={train}", f"test_data={test_pkl}", f"output_dir={tmp_path / 'out'}")
    proc = run_kernel(*sets, tmpdir=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "error: cannot load model roberta-base: it is neither a folder with a config.json nor reachable on the "
        "Hugging Face hub (internet off?) (OSError); pass --set model=FOLDER, a local copy with config.json, the "
        "weights and the tokenizer files"]
    on_kaggle = run_kernel(*sets, env=kernel_env(tmp_path, KAGGLE_KERNEL_RUN_TYPE="Batch"))
    assert on_kaggle.returncode == 2 and len(on_kaggle.stderr.strip().splitlines()) == 1
    assert ("attach a copy (model_sources or dataset_sources in kernel-metadata.json) and point --set model= at its "
            "folder") in on_kaggle.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ the prediction batch
def oom_above(limit: int, calls: list):
    """A forward that runs out of memory for batches of more than `limit` rows, as a GPU would."""
    def forward(self, input_ids, attention_mask):
        calls.append(len(input_ids))
        if len(input_ids) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(self, input_ids, attention_mask)

    from agnews_lora import Classifier

    real_forward = Classifier.forward
    return forward


def test_out_of_memory_halves_the_prediction_batch(kernel, tmp_path, monkeypatch, capsys):
    cfg = kernel.config_from_overrides({"smoke": True})
    tokenizer = kernel.smoke_tokenizer(["alpha beta gamma delta epsilon"] * 20)
    net = kernel.build_model(cfg, kernel.save_smoke_encoder(cfg, tokenizer, tmp_path / "base"))
    seqs = kernel.encode_texts(tokenizer, [" ".join(["alpha beta"] * (i % 7 + 1)) for i in range(100)], 64)
    args = (kernel.Feed(tokenizer.pad_token_id, torch.device("cpu")),)
    expected = kernel.predict_logits(net, seqs, 10, *args)
    calls = []
    monkeypatch.setattr(kernel.Classifier, "forward", oom_above(10, calls))
    assert kernel.fitting_batch_size(net, seqs, 64, *args) == 8
    np.testing.assert_allclose(kernel.predict_logits(net, seqs, 64, *args), expected, rtol=1e-5, atol=1e-6)
    assert calls[:4] == [64, 32, 16, 8] and max(calls[4:]) == 64 and set(calls[5:8]) == {32, 16, 8}
    err = capsys.readouterr().err
    assert "prediction check: out of memory with 64 rows per batch; retrying with 32" in err
    assert "predict: out of memory with 16 rows per batch; retrying with 8" in err
    monkeypatch.setattr(kernel.Classifier, "forward", oom_above(0, []))
    with pytest.raises(kernel.KernelError, match="out of memory with one row per batch; lower predict_max_length"):
        kernel.predict_logits(net, seqs, 4, *args, desc="test")


def test_a_run_fits_its_prediction_batch_before_training(kernel, run_main, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(kernel.Classifier, "forward", oom_above(40, calls))
    code, out, err = run_main(*QUICK, "eval_batch_size=128", f"output_dir={tmp_path}")
    assert code == 0, err[-3000:]
    assert "prediction check: out of memory with 128 rows per batch; retrying with 64" in err
    assert "prediction check: out of memory with 64 rows per batch; retrying with 32" in err
    assert err.count("out of memory") == 2  # found before training; every later batch has 32 rows at most
    assert max(calls[2:]) == 32
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


# ------------------------------------------------------------------------ a failure after training
@pytest.mark.compat
def test_a_failure_while_predicting_keeps_the_adapter(kernel, run_main, used_output, tmp_path, monkeypatch):
    """Prediction fails after training (memory runs out whatever the batch): the adapter is in the output
    folder, said in one line with the way to predict with it, and predicting with it works."""
    real_keep, real_forward, kept = kernel.keep_adapter, kernel.Classifier.forward, []

    def keep_then_fail(*args):  # the hook: from now on every forward runs out of memory
        kept.append(real_keep(*args))
        return kept[-1]

    def forward(self, ids, mask):
        if kept:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_forward(self, ids, mask)

    monkeypatch.setattr(kernel, "keep_adapter", keep_then_fail)
    monkeypatch.setattr(kernel.Classifier, "forward", forward)
    code, out, err = run_main(*QUICK, f"output_dir={used_output}")
    adapter = used_output / "adapter"
    assert code == 5 and "epoch 1:" in out
    assert err.strip().splitlines()[-1] == (
        f"error: {ONE_ROW_PER_BATCH}; the trained adapter is kept in {adapter}: predict with it using --set "
        f"adapter_from={adapter} (lorakit push --predict-from N)")
    assert f"saved the trained adapter to {adapter} before predicting" in out
    assert sorted(p.name for p in used_output.iterdir()) == ["adapter"]  # the earlier run's outputs are gone
    assert {"kit.json", "head.pt", "adapter_config.json"} <= {p.name for p in adapter.iterdir()}
    monkeypatch.setattr(kernel, "keep_adapter", real_keep)
    monkeypatch.setattr(kernel.Classifier, "forward", real_forward)
    code, out, err = run_main("smoke=true", f"adapter_from={adapter}", f"output_dir={tmp_path / 'again'}")
    assert code == 0, err[-3000:]
    kernel.validate_submission(tmp_path / "again" / "submission.csv", 8000)


def test_a_full_disk_while_staging_is_one_line_and_keeps_the_adapter(kernel, run_main, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):  # the hook: the temporary folder fills up while the outputs are written
        raise OSError(28, "No space left on device", "probabilities.csv")

    monkeypatch.setattr(kernel, "write_submission", disk_full)
    code, _, err = run_main(*QUICK, f"output_dir={tmp_path}")
    assert code == 5 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: cannot write the outputs: No space left on device "
                                                   f"(probabilities.csv); the trained adapter is kept in {tmp_path}")
    assert (tmp_path / "adapter" / "kit.json").is_file() and not (tmp_path / "submission.csv").exists()


# ------------------------------------------------------------------------------------------- the budget
def test_a_budget_above_the_competitions_rule_is_named(kernel, capsys, monkeypatch):
    breakdown = kernel.param_breakdown(kernel.config_from_overrides({"lora_r": 40}))
    assert 1_000_000 < breakdown["total"] < 2_000_000
    text = kernel.format_breakdown(breakdown, 2_000_000)
    assert text.splitlines()[-1] == ("  warning: param_budget 2,000,000 is above the competition's rule of at most "
                                     "1,000,000 trainable parameters; this config breaks it: not a valid entry")
    assert "warning" not in kernel.format_breakdown(breakdown, 1_000_000)
    kernel.model_config(kernel.config_from_overrides({"param_budget": 1_500_000}))  # the kernel's own budget output
    assert "param_budget 1,500,000 is above the competition's rule of at most 1,000,000" in capsys.readouterr().out

    from lorakit.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["check", "--set", "param_budget=2000000", "--set", "lora_r=40"]) == 0
    assert "param_budget 2,000,000 is above the competition's rule of at most 1,000,000 trainable parameters; " \
           "this config breaks it" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- adapters
def break_head_foreign(adapter: Path) -> tuple:
    torch.save(argparse.Namespace(weights=[1, 2]), adapter / "head.pt")
    return (), f"error: {adapter / 'head.pt'} is not a head saved by this kernel (it must hold only tensors)"


def break_head_shape(adapter: Path) -> tuple:
    torch.save({"1.weight": torch.zeros(4, 10), "1.bias": torch.zeros(4)}, adapter / "head.pt")
    return (), f"error: {adapter / 'head.pt'} does not fit this head (2 tensors for another head kind or encoder size)"


def break_kit_json(adapter: Path) -> tuple:
    (adapter / "kit.json").write_text("{not json")
    return (), f"error: cannot read {adapter / 'kit.json'} (JSONDecodeError); point adapter_from at"


def break_kit_fields(adapter: Path) -> tuple:
    (adapter / "kit.json").write_text(json.dumps({"config": {}, "temperature": "hot"}))
    return (), f"error: {adapter / 'kit.json'} is not a kit.json this kernel wrote"


def break_kit_config(adapter: Path) -> tuple:
    kit = json.loads((adapter / "kit.json").read_text())
    (adapter / "kit.json").write_text(json.dumps({**kit, "config": {**kit["config"], "lr": 1e-320}}))
    return (), f"error: {adapter / 'kit.json'} holds a config this kernel refuses: invalid config: lr must be"


def break_lora_weights(adapter: Path) -> tuple:
    (adapter / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad}")
    return (), f"error: the LoRA adapter in {adapter} does not load on this encoder ("


@pytest.mark.compat
@pytest.mark.parametrize("damage", [break_head_foreign, break_head_shape, break_kit_json, break_kit_fields,
                                    break_kit_config, break_lora_weights])
def test_a_broken_adapter_is_one_line(smoke_run, run_main, tmp_path, damage):
    adapter = tmp_path / "adapter"
    shutil.copytree(smoke_run[0] / "adapter", adapter)
    extra, message = damage(adapter)
    assert_one_line_refusal(run_main, adapter, tmp_path, extra, message)


def test_another_encoders_adapter_is_one_line(smoke_run, minilm_path, run_main, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(smoke_run[0] / "adapter", adapter)
    shutil.rmtree(adapter / "base")  # the tiny encoder it was trained on is gone: MiniLM (384 wide) instead
    assert_one_line_refusal(run_main, adapter, tmp_path, (f"model={minilm_path}",), (
        f"error: the adapter in {adapter} was trained on an encoder of hidden size 64, but {minilm_path} has 384: "
        "predict with the encoder it was trained on (--set model=)"))


def assert_one_line_refusal(run_main, adapter: Path, tmp_path: Path, extra: tuple, message: str) -> None:
    code, out, err = run_main("smoke=true", f"adapter_from={adapter}", f"output_dir={tmp_path / 'out'}", *extra)
    assert code == 2 and "Traceback" not in err and "weights_only" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith(message), err[-2000:]
    assert not (tmp_path / "out").exists()


def test_a_predict_only_failure_keeps_its_own_exit_status(kernel, smoke_run, run_main, tmp_path, monkeypatch):
    """Nothing was trained, so nothing is kept: the error is the failure's own (exit 2), not 5."""
    real_check, real_forward, checked = kernel.check_prediction_batch, kernel.Classifier.forward, []

    def check_then_fail(*args):  # the hook: memory runs out once the batch was checked
        real_check(*args)
        checked.append(True)

    def forward(self, ids, mask):
        if checked:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_forward(self, ids, mask)

    monkeypatch.setattr(kernel, "check_prediction_batch", check_then_fail)
    monkeypatch.setattr(kernel.Classifier, "forward", forward)
    code, _, err = run_main("smoke=true", f"adapter_from={smoke_run[0] / 'adapter'}", f"output_dir={tmp_path / 'o'}")
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {ONE_ROW_PER_BATCH}"
    assert not (tmp_path / "o").exists()
