"""The Kaggle kernel's parts: config rules, budget count, cleaning, loaders, batching, submission rules."""
from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import KERNEL, ROOT, run_kernel


# ------------------------------------------------------------------------------------------ cleaning
@pytest.mark.parametrize("raw, clean", [
    ("Oil hits #36;50 a barrel", "Oil hits $50 a barrel"),
    ("Bush #39;s plan", "Bush's plan"),
    ("worth  #36;3\\billion", "worth $3 billion"),
    ("Texas Instruments Inc. &lt;TXN.N&gt;, rose", "Texas Instruments Inc. <TXN.N>, rose"),
    ('&lt;a href="http://x.com/y"&gt;link&lt;/a&gt;', "link"),
    ("&lt;b&gt;Breaking&lt;/b&gt; news", "Breaking news"),
    ("AT&amp;amp;T earnings", "AT&T earnings"),
    ("Wall St.\\Bears claw back", "Wall St. Bears claw back"),
    ("see http://www.reuters.com/news/x?id=1 now", "see reuters.com now"),
    ("  many \t spaces \n here ", "many spaces here"),
    ("Stocks rise (Reuters) - Zürich café", "Stocks rise (Reuters) - Zürich café"),
    ("AP - Les Échos: 日本 (photo)", "AP - Les Échos: 日本 (photo)"),
])
def test_clean_text(kernel, raw, clean):
    assert kernel.clean_text(raw) == clean


# ------------------------------------------------------------------------------------------- config
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


# Each value breaks exactly one rule; the same table drives `lorakit check` in test_kernel_rules.py.
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


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_every_knob_is_checked_before_anything_loads(kernel, key, value, message):
    with pytest.raises(kernel.ConfigError, match=re.escape(message)):
        kernel.config_from_overrides(kernel.parse_sets([f"{key}={value}"]))


def test_every_numeric_field_has_a_range(kernel):
    numeric = {f.name for f in kernel.dataclasses.fields(kernel.Config) if f.type in ("int", "float")}
    assert numeric == set(kernel.RANGES)


def test_usable_positions(kernel, minilm_path, tmp_path):
    assert kernel.usable_positions(kernel.Config()) == 512
    smoke = kernel.config_from_overrides({"smoke": True})
    assert kernel.usable_positions(smoke) == kernel.SMOKE_ARCH["max_position_embeddings"] - 2
    assert kernel.usable_positions(kernel.Config(model=str(minilm_path))) == 512  # BERT: no padding offset
    assert kernel.usable_positions(kernel.Config(model="someone/unknown-model")) is None  # a hub id, offline
    assert kernel.length_problems(kernel.Config(max_length=300), 256) == [
        "max_length must be <= 256, the usable positions of roberta-base, got 300"]


def test_override_order_block_file_set(kernel, tmp_path, monkeypatch):
    rendered = kernel.render_overrides(KERNEL.read_text(), {"epochs": 7, "lr": 1e-3, "seed": 5})
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"lr": 2e-3, "seed": 6}))
    block = re.search(r'OVERRIDES_JSON = r"""\n(.*?)\n"""', rendered, re.S).group(1)
    monkeypatch.setattr(kernel, "OVERRIDES_JSON", block)  # what the running build copy holds
    cfg = kernel.resolve_config(str(config_file), ["seed=9"])
    assert (cfg.epochs, cfg.lr, cfg.seed) == (7, 2e-3, 9)


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


def test_overrides_block_roundtrip(kernel):
    text = KERNEL.read_text()
    assert kernel.read_overrides_block(text) == {}
    rendered = kernel.render_overrides(text, {"lora_r": 4, "smoke": True})
    assert kernel.read_overrides_block(rendered) == {"lora_r": 4, "smoke": True}
    compile(rendered, "rendered.py", "exec")
    # only the block changed: everything around it is byte-identical
    head, tail = text.split('OVERRIDES_JSON = r"""\n{}\n"""')
    assert rendered.startswith(head) and rendered.endswith(tail)
    assert kernel.read_overrides_block(kernel.render_overrides(rendered, {})) == {}
    with pytest.raises(kernel.ConfigError, match="unknown config key"):
        kernel.render_overrides(text, {"nope": 1})
    with pytest.raises(kernel.ConfigError, match="markers are missing"):
        kernel.read_overrides_block(text.replace(kernel.OVERRIDES_END, ""))


def test_config_hash(kernel):
    base = kernel.Config()
    same = kernel.config_from_overrides({"output_dir": "/x", "train_data": "a.csv", "test_data": "t.pkl"})
    assert kernel.config_hash(base) == kernel.config_hash(same)
    assert kernel.config_hash(base) != kernel.config_hash(kernel.config_from_overrides({"lr": 1e-4}))
    assert re.fullmatch(r"[0-9a-f]{64}", kernel.config_hash(base))


# ------------------------------------------------------------------------------------------- budget
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


def test_bad_override_exits_with_one_line(tmp_path):
    proc = run_kernel("epochs=many", f"output_dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key 'epochs' expects int, got 'many'"


# --------------------------------------------------------------------------------------------- data
def test_train_source_auto_takes_the_one_attached_ag_news_csv(kernel, tmp_path):
    folder = tmp_path / "ag-news-classification-dataset"
    folder.mkdir()
    pd.DataFrame({"Class Index": [3, 1], "Title": ["T1", "T2"], "Description": ["d1", "d2"]}).to_csv(
        folder / "train.csv", index=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("id,x\n1,2\n")  # not AG News: no candidate
    source = kernel.find_train_source(tmp_path)
    assert source == str(folder / "train.csv")
    frame = kernel.load_train_frame(source)
    assert frame["text"].tolist() == ["T1 d1", "T2 d2"] and frame["label"].tolist() == [2, 0]
    shutil.copytree(folder, tmp_path / "shadow")
    with pytest.raises(kernel.DataError, match=r"2 candidate train.csv files under .*--set train_data=PATH"):
        kernel.find_train_source(tmp_path)
    assert kernel.find_train_source(tmp_path / "nothing-here") == "hf:ag_news"


def test_train_csv_errors(kernel, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,text\n1,x\n")
    with pytest.raises(kernel.DataError, match="lacks column"):
        kernel.read_ag_news_csv(bad)
    bad.write_text("Class Index,Title,Description\n5,a,b\n")
    with pytest.raises(kernel.DataError, match="must hold 1-4"):
        kernel.read_ag_news_csv(bad)


def test_stratified_split_holds_out_every_class(kernel):
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    train, val = kernel.stratified_split(labels, 0.1, seed=3)
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [10, 20, 30, 40]
    again = kernel.stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(val, again[1])


def test_length_grouped_batches_cover_every_row_once(kernel):
    lengths = np.random.default_rng(0).integers(5, 120, size=1000)
    batches = kernel.length_grouped_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.1  # grouping keeps padding small
    order = np.concatenate(kernel.sorted_batches(lengths, 64))
    assert (np.diff(lengths[order]) <= 0).all()


def test_augment_changes_text_reproducibly(kernel):
    text = "Stocks rallied on Monday as investors cheered strong quarterly earnings from retailers."
    outputs = [kernel.augment_text(text, random.Random(seed)) for seed in range(20)]
    assert all(o != text for o in outputs)
    assert outputs == [kernel.augment_text(text, random.Random(seed)) for seed in range(20)]


# -------------------------------------------------------------------------------------- submission
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


# -------------------------------------------------------------------------------------- prediction
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


def test_gpu_support_follows_the_torch_build(kernel, monkeypatch):
    arches = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    assert kernel.gpu_supported((7, 5), arches)  # T4
    assert kernel.gpu_supported((8, 9), arches)  # same major, newer minor: sm_86 cubins run
    assert not kernel.gpu_supported((6, 0), arches)  # P100 on a build without sm_60
    assert kernel.gpu_supported((6, 0), ["sm_50", "compute_50"])  # PTX JIT-compiles forward
    assert kernel.gpu_supported((12, 0), ["sm_90", "sm_100", "compute_120"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arches)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla P100-PCIE-16GB")
    with pytest.raises(kernel.KernelError, match=r"this GPU \(Tesla P100-PCIE-16GB, compute capability 6.0\) "
                                                 r"cannot run torch .*pick the accelerator 'GPU T4 x2'"):
        kernel.accelerator()


# ------------------------------------------------------------------------------------ Kaggle metadata
def test_kernel_metadata_is_pushable(kernel):
    meta = json.loads((ROOT / "kernel-metadata.json").read_text())
    owner, slug = meta["id"].split("/")
    assert owner and re.fullmatch(r"[a-z0-9-]{5,}", slug)
    assert len(meta["title"]) >= 5
    slugified = re.sub(r"[^a-z0-9]+", "-", meta["title"].lower()).strip("-")
    assert slugified == slug  # else the client warns that the title does not resolve to the id
    assert (ROOT / meta["code_file"]).resolve() == KERNEL
    assert meta["language"] == "python" and meta["kernel_type"] == "script"
    for key in ("is_private", "enable_gpu", "enable_internet"):
        assert meta[key] is True
    assert meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["competition_sources"] == [kernel.COMPETITION]
    assert all(re.fullmatch(r"[\w-]+/[\w-]+", s) for s in meta["dataset_sources"])
    compile(KERNEL.read_text(), str(KERNEL), "exec")


def test_kernel_imports_nothing_local():
    """Only the script is uploaded: it may import the standard library and the Kaggle image's packages."""
    import sys

    source = KERNEL.read_text()
    roots = {name.split(".")[0] for name in re.findall(r"^\s*(?:from|import) ([\w.]+)", source, re.M)}
    third_party = {"numpy", "pandas", "torch", "transformers", "peft", "datasets", "tqdm", "tokenizers", "matplotlib",
                   "pyarrow"}
    assert roots - set(sys.stdlib_module_names) - {"__future__"} <= third_party


@pytest.mark.parametrize("said, run_type, expected", [
    ("1", "", True), ("0", "Batch", False), ("", "Batch", True), ("", "", None),
])
def test_on_kaggle_is_what_the_environment_says(kernel, monkeypatch, tmp_path, said, run_type, expected):
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", said)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", run_type)
    monkeypatch.setattr(kernel, "KAGGLE_WORKING", tmp_path / "absent")  # this machine may be Kaggle's image
    assert kernel.on_kaggle() is (bool(expected))
    monkeypatch.setattr(kernel, "KAGGLE_WORKING", tmp_path)  # /kaggle/working exists: only an explicit 0 says no
    assert kernel.on_kaggle() is (said != "0")


def test_a_malformed_on_kaggle_variable_is_one_line(kernel, monkeypatch):
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", "yes")
    with pytest.raises(kernel.ConfigError, match="AGNEWS_ON_KAGGLE must be 1 .on Kaggle. or 0 .elsewhere., got 'yes'"):
        kernel.on_kaggle()
