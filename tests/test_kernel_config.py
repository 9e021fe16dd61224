"""The kernel's config: the command line, --set/--config/overrides block parsing, every knob's rule checked before
anything loads, smoke defaults, the config hash."""
from __future__ import annotations

import re

import pytest

from kernel_helpers import BAD_VALUES, run_kernel


def test_parse_sets_types(kernel):
    parsed = kernel.parse_sets(["epochs=2", "lr=3e-4", "smoke=true", "lora_targets=query,value", "lora_alpha=8"])
    assert parsed == {"epochs": 2, "lr": 3e-4, "smoke": True, "lora_targets": "query,value", "lora_alpha": 8.0}
    assert kernel.parse_sets(["smoke=false"]) == {"smoke": False}


@pytest.mark.parametrize("item, message", [
    ("nope=1", r"unknown config key 'nope'; valid keys: model, .*lora_r"),
    ("epochs=two", r"config key 'epochs' expects int, got 'two'"),
    ("epochs=1.5", r"config key 'epochs' expects int"),
    ("smoke=yes", r"config key 'smoke' expects bool, got 'yes'"),
    ("lr", r"--set expects key=value"),
])
def test_parse_sets_errors(kernel, item, message):
    with pytest.raises(kernel.ConfigError, match=message):
        kernel.parse_sets([item])


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": "3"}, r"'epochs' expects int, got '3'"),
    ({"smoke": 1}, r"'smoke' expects bool"),
    ({"epochs": True}, r"'epochs' expects int"),
    ({"bogus": 1}, r"unknown config key 'bogus'; valid keys:"),
    ({"head": "mlp"}, r"head must be one of linear, roberta"),
    ({"lora_layers": "top:0"}, r"lora_layers must be 'all' or 'top:K'"),
    ({"prior_correction": "bayes"}, r"prior_correction must be one of"),
    ({"lora_targets": " , "}, r"lora_targets must name at least one module"),
    ({"lora_rank": 8}, r"unknown config key 'lora_rank'; did you mean 'lora_r'\?"),
])
def test_override_errors(kernel, overrides, message):
    with pytest.raises(kernel.ConfigError, match=message):
        kernel.config_from_overrides(overrides)


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_every_knob_is_checked_before_anything_loads(kernel, key, value, message):
    with pytest.raises(kernel.ConfigError, match=re.escape(message)):
        kernel.config_from_overrides(kernel.parse_sets([f"{key}={value}"]))


def test_every_numeric_field_has_a_range(kernel):
    numeric = {f.name for f in kernel.dataclasses.fields(kernel.Config) if f.type in ("int", "float")}
    assert numeric == {key for key, rules in kernel.KNOBS.items() if rules.low is not None}


def test_usable_positions(kernel, minilm_path):
    assert kernel.usable_positions(kernel.Config()) == 512
    smoke = kernel.config_from_overrides({"smoke": True})
    assert kernel.usable_positions(smoke) == kernel.SMOKE_ARCH["max_position_embeddings"] - 2
    assert kernel.usable_positions(kernel.Config(model=str(minilm_path))) == 512  # BERT: no padding offset
    assert kernel.usable_positions(kernel.Config(model="someone/unknown-model")) is None  # a hub id, offline
    assert kernel.length_problems(kernel.Config(max_length=300), 256) == [
        "max_length must be <= 256, the usable positions of roberta-base, got 300"]


def test_config_file_errors(kernel, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(kernel.ConfigError, match="--config .*bad.json is not valid JSON"):
        kernel.resolve_config(str(bad))
    with pytest.raises(kernel.ConfigError, match="cannot read --config .*missing.json: No such file"):
        kernel.resolve_config(str(tmp_path / "missing.json"))
    bad.write_text("[1, 2]")
    with pytest.raises(kernel.ConfigError, match="must hold a JSON object, got list"):
        kernel.resolve_config(str(bad))


def test_smoke_defaults_yield_to_explicit_overrides(kernel):
    assert kernel.config_from_overrides({"smoke": True}).lr == kernel.SMOKE_DEFAULTS["lr"]
    assert kernel.config_from_overrides({"smoke": True, "lr": 1e-3}).lr == 1e-3
    assert kernel.config_from_overrides({}).lr == kernel.Config().lr


def test_config_hash(kernel):
    base = kernel.Config()
    same = kernel.config_from_overrides({"output_dir": "/x", "train_data": "a.csv", "test_data": "t.pkl"})
    assert kernel.config_hash(base) == kernel.config_hash(same)
    assert kernel.config_hash(base) != kernel.config_hash(kernel.config_from_overrides({"lr": 1e-4}))
    assert re.fullmatch(r"[0-9a-f]{64}", kernel.config_hash(base))


@pytest.mark.slow
def test_bad_override_exits_with_one_line(tmp_path):
    proc = run_kernel("epochs=many", f"output_dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key 'epochs' expects int, got 'many'"


def test_unknown_arguments_and_a_bad_progress_interval(kernel, run_main, capfd, monkeypatch):
    assert kernel.main(["--sett", "lr=1"]) == 2
    assert capfd.readouterr().err.strip() == ("error: unknown argument '--sett'; did you mean --set? (usage: "
                                               "agnews_lora.py [--config FILE.json] [--set KEY=VALUE ...])")
    monkeypatch.setenv("AGNEWS_PROGRESS_SECONDS", "soon")
    assert kernel.main(["--set", "smoke=true"]) == 2
    assert capfd.readouterr().err.strip() == "error: AGNEWS_PROGRESS_SECONDS must be a number of seconds >= 0, got 'soon'"
    monkeypatch.delenv("AGNEWS_PROGRESS_SECONDS")
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", "1")  # Kaggle may pass its own arguments
    assert kernel.parse_args(["-f", "/kernel.json", "--set", "lr=1"]).sets == ["lr=1"]
    assert "warning: ignoring arguments -f /kernel.json" in capfd.readouterr().err


@pytest.mark.parametrize("said, run_type, expected", [
    ("1", "", True), ("0", "Batch", False), ("", "Batch", True), ("", "", False),
])
def test_on_kaggle_is_what_the_environment_says(kernel, monkeypatch, tmp_path, said, run_type, expected):
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", said)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", run_type)
    monkeypatch.setattr(kernel, "KAGGLE_WORKING", tmp_path / "absent")  # this machine may be Kaggle's image
    assert kernel.on_kaggle() is expected
    monkeypatch.setattr(kernel, "KAGGLE_WORKING", tmp_path)  # /kaggle/working exists: only an explicit 0 says no
    assert kernel.on_kaggle() is (said != "0")


def test_a_malformed_on_kaggle_variable_is_one_line(kernel, monkeypatch):
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", "yes")
    with pytest.raises(kernel.ConfigError, match="AGNEWS_ON_KAGGLE must be 1 .on Kaggle. or 0 .elsewhere., got 'yes'"):
        kernel.on_kaggle()
