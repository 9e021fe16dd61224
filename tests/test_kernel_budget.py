"""The model and the parameter budget: exact counts on the competition's architecture, over-budget configs refused
before training, a model that cannot be loaded is one line."""
from __future__ import annotations

import json

import pytest
import torch

from kernel_helpers import ROOT, kernel_env, run_kernel, write_test_pickle, write_train_csv


@pytest.mark.compat
def test_seed_config_count(kernel):
    cfg = kernel.config_from_overrides({"head": "roberta", "lora_r": 8, "lora_alpha": 8, "lora_targets": "query"})
    breakdown = kernel.param_breakdown(cfg)
    assert breakdown == {"lora": {"attention.self.query": 147_456}, "head": 593_668, "other": 0,
                         "total": 741_124}


@pytest.mark.compat
def test_over_budget_config_is_rejected(kernel):
    cfg = kernel.config_from_overrides({"head": "roberta", "lora_r": 4, "lora_targets": "query,key,value,dense"})
    breakdown = kernel.param_breakdown(cfg)
    assert breakdown["total"] == 1_257_220
    assert breakdown["lora"]["output.dense"] == breakdown["lora"]["intermediate.dense"] == 12 * 4 * (768 + 3072)
    with pytest.raises(kernel.BudgetError, match="1,257,220 trainable parameters exceed param_budget 1,000,000"):
        kernel.check_budget(cfg, breakdown)


@pytest.mark.compat
def test_default_config_within_budget_with_linear_head(kernel):
    breakdown = kernel.param_breakdown(kernel.Config())
    assert breakdown["head"] == 768 * 4 + 4
    assert breakdown["other"] == 0
    assert breakdown["total"] <= kernel.Config().param_budget


def test_target_expansion_is_exact(kernel):
    with torch.device("meta"):
        from transformers import AutoModel

        encoder = AutoModel.from_config(kernel.encoder_config(kernel.Config()))
    ffn_out = kernel.lora_module_names(encoder, "output.dense", "all")
    assert len(ffn_out) == 12 and all(".attention." not in n for n in ffn_out)
    dense = kernel.lora_module_names(encoder, "dense", "all")
    assert len(dense) == 36 and not any("pooler" in n for n in dense)
    top = kernel.lora_module_names(encoder, "query", "top:3")
    assert set(top) == {f"encoder.layer.{i}.attention.self.query" for i in (9, 10, 11)}
    with pytest.raises(kernel.ConfigError, match="match no module; in-layer names: .*attention.self.query"):
        kernel.lora_module_names(encoder, "q_proj", "all")


def test_architecture_matches_shared_config(kernel, shared_dir):
    shipped = json.loads((shared_dir / "tokenizers" / "roberta-base" / "config.json").read_text())
    for key, value in kernel.ROBERTA_BASE_ARCH.items():
        assert shipped[key] == value, key


def test_over_budget_run_exits_before_training(kernel, tmp_path, capfd):
    code = kernel.main(["--set", "head=roberta", "--set", "lora_r=4", "--set", "lora_targets=query,key,value,dense",
                        "--set", f"output_dir={tmp_path}"])
    out, err = capfd.readouterr()
    assert code == 3
    assert "1,257,220" in out + err and "intermediate.dense" in err
    assert "epoch 1" not in out and not list(tmp_path.iterdir())


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


@pytest.mark.slow
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
    on_kaggle = run_kernel(*sets, env=kernel_env(tmp_path, on_kaggle=True))
    assert on_kaggle.returncode == 2 and len(on_kaggle.stderr.strip().splitlines()) == 1
    assert ("attach a copy (model_sources or dataset_sources in kernel-metadata.json) and point --set model= at its "
            "folder") in on_kaggle.stderr
    assert not (tmp_path / "out").exists()
