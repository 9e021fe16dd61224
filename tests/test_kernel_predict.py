"""Prediction: calibration and priors, the saved head and adapter (digest, reload, found by hash), predict-only runs,
the prediction batch that fits, broken adapters refused in one line."""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kernel_helpers import ONE_ROW_PER_BATCH, QUICK, out_of_memory_after


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


def assert_one_line_refusal(run_main, adapter: Path, tmp_path: Path, extra: tuple, message: str) -> None:
    code, out, err = run_main("smoke=true", f"adapter_from={adapter}", f"output_dir={tmp_path / 'out'}", *extra)
    assert code == 2 and "Traceback" not in err and "weights_only" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith(message), err[-2000:]
    assert not (tmp_path / "out").exists()


def test_temperature_and_em_prior(kernel):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 4000)
    logits = rng.normal(size=(4000, 4)) + 3.0 * np.eye(4)[labels]
    assert 2.0 < kernel.fit_temperature(logits * 3.0, labels) / kernel.fit_temperature(logits, labels) < 4.0
    # a test set drawn with a skewed prior: EM moves its estimate toward the truth
    true_prior = np.array([0.1, 0.2, 0.3, 0.4])
    test_labels = rng.choice(4, size=6000, p=true_prior)
    probs = kernel.softmax(rng.normal(size=(6000, 4)) + 2.0 * np.eye(4)[test_labels])
    estimate = kernel.em_prior(probs, np.full(4, 0.25))
    assert np.abs(estimate - true_prior).max() < np.abs(probs.mean(0) - true_prior).max()
    corrected, prior = kernel.corrected_probabilities(np.log(probs), 1.0, "em_uniform", np.full(4, 0.25))
    assert np.allclose(prior, (estimate + 0.25) / 2, atol=1e-4) and np.allclose(corrected.sum(1), 1)
    plain, none = kernel.corrected_probabilities(np.log(probs), 1.0, "none", np.full(4, 0.25))
    assert none is None and np.allclose(plain, probs)


@pytest.mark.parametrize("head, expected", [("linear", 64 * 4 + 4), ("roberta", 64 * 64 + 64 + 64 * 4 + 4)])
def test_head_save_reload_predicts_the_same(kernel, tmp_path, head, expected):
    cfg = kernel.config_from_overrides({"smoke": True, "head": head})
    tokenizer = kernel.smoke_tokenizer(["alpha beta gamma delta"] * 20)
    source = kernel.save_smoke_encoder(cfg, tokenizer, tmp_path / "base")
    net = kernel.build_model(cfg, source)
    assert kernel.breakdown_of(net)["head"] == expected
    with torch.no_grad():  # make the head and adapters non-trivial, as after training
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    seqs = kernel.encode_texts(tokenizer, ["alpha beta", "gamma delta alpha", "beta"], 32)
    before = kernel.predict_logits(net, seqs, 2, kernel.Feed(tokenizer.pad_token_id, torch.device("cpu")))
    kernel.save_adapter(kernel.Model(net, tokenizer, cfg, source, kernel.breakdown_of(net), generated=True),
                        tmp_path / "adapter", 1.5)
    again = kernel.config_from_overrides({"smoke": True, "adapter_from": str(tmp_path / "adapter")})
    loaded = kernel.load_adapter_model(again, kernel.model_config(again))
    after = kernel.predict_logits(loaded.net, seqs, 3, kernel.Feed(tokenizer.pad_token_id, torch.device("cpu")))
    assert loaded.trained and loaded.config.head == head and loaded.temperature == 1.5
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-5)


def test_adapter_digest_pins_the_files(kernel, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "kit.json").write_text("{}")
    (tmp_path / "base" / "w.bin").write_bytes(b"123")
    digest = kernel.adapter_digest(tmp_path)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("ignored")
    assert kernel.adapter_digest(tmp_path) == digest and re.fullmatch(r"[0-9a-f]{64}", digest)
    (tmp_path / "base" / "w.bin").write_bytes(b"124")
    assert kernel.adapter_digest(tmp_path) != digest


def test_an_attached_adapter_is_found_by_its_hash(kernel, tmp_path):
    mounted = tmp_path / "input" / "datasets" / "alice" / "agnews-v3-adapter"
    mounted.mkdir(parents=True)
    (mounted / "kit.json").write_text('{"config": {}}')
    other = tmp_path / "input" / "another" / "adapter"
    other.mkdir(parents=True)
    (other / "kit.json").write_text('{"config": {"lora_r": 4}}')
    digest = kernel.adapter_digest(mounted)
    cfg = kernel.Config(adapter_from="/kaggle/input/agnews-v3-adapter", adapter_sha256=digest)
    assert kernel.locate_adapter(cfg, tmp_path / "input").adapter_from == str(mounted)
    assert kernel.locate_adapter(kernel.Config(), tmp_path / "input") == kernel.Config()  # nothing to locate
    with pytest.raises(kernel.ConfigError, match=r"no folder under .* holds the adapter with adapter_sha256 0000"):
        kernel.locate_adapter(kernel.Config(adapter_from="/nowhere", adapter_sha256="0" * 64), tmp_path / "input")


@pytest.mark.slow
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


@pytest.mark.slow
def test_non_finite_probabilities_are_refused(kernel, run_main, tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "corrected_probabilities",
                        lambda logits, *a: (np.full((len(logits), 4), np.nan), None))
    code, _, err = run_main(*QUICK, f"output_dir={tmp_path / 'out'}")
    assert code == 4 and "non-finite probabilities for 8,000 of 8,000 test rows; no submission written" in err
    assert f"the trained adapter is kept in {tmp_path / 'out' / 'adapter'}" in err  # saved before predicting
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["adapter"]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.compat
@pytest.mark.parametrize("damage", [break_head_foreign, break_head_shape, break_kit_json, break_kit_fields,
                                    break_kit_config, break_lora_weights])
def test_a_broken_adapter_is_one_line(smoke_run, run_main, tmp_path, damage):
    adapter = tmp_path / "adapter"
    shutil.copytree(smoke_run[0] / "adapter", adapter)
    extra, message = damage(adapter)
    assert_one_line_refusal(run_main, adapter, tmp_path, extra, message)


@pytest.mark.slow
def test_another_encoders_adapter_is_one_line(smoke_run, minilm_path, run_main, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(smoke_run[0] / "adapter", adapter)
    shutil.rmtree(adapter / "base")  # the tiny encoder it was trained on is gone: MiniLM (384 wide) instead
    assert_one_line_refusal(run_main, adapter, tmp_path, (f"model={minilm_path}",), (
        f"error: the adapter in {adapter} was trained on an encoder of hidden size 64, but {minilm_path} has 384: "
        "predict with the encoder it was trained on (--set model=)"))


@pytest.mark.slow
def test_a_predict_only_failure_keeps_its_own_exit_status(kernel, smoke_run, run_main, tmp_path, monkeypatch):
    """Nothing was trained, so nothing is kept: the error is the failure's own (exit 2), not 5."""
    out_of_memory_after(monkeypatch, kernel, "check_prediction_batch")  # memory runs out once the batch was checked
    code, _, err = run_main("smoke=true", f"adapter_from={smoke_run[0] / 'adapter'}", f"output_dir={tmp_path / 'o'}")
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {ONE_ROW_PER_BATCH}"
    assert not (tmp_path / "o").exists()
