"""The Kaggle kernel: config, budget count, cleaning, loaders, submission rules and whole offline runs."""
from __future__ import annotations

import json
import pickle
import random
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import KERNEL, ROOT, run_kernel

METRIC_KEYS = {
    "trainable_params", "param_breakdown", "val_accuracy", "history", "train_seconds", "train_samples_per_second",
    "tokens_per_second", "predict_seconds", "test_rows", "test_label_distribution", "device", "versions",
    "config_hash",
}


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
    ({"val_fraction": 0.9}, r"val_fraction must be in"),
    ({"prior_correction": "bayes"}, r"prior_correction must be one of"),
    ({"lora_targets": " , "}, r"lora_targets must name at least one module"),
])
def test_override_errors(kernel, overrides, message):
    with pytest.raises(kernel.ConfigError, match=message):
        kernel.config_from_overrides(overrides)


def test_override_order_block_file_set(kernel, tmp_path, monkeypatch):
    script = tmp_path / "agnews_lora.py"
    script.write_text(kernel.render_overrides(KERNEL.read_text(), {"epochs": 7, "lr": 1e-3, "seed": 5}))
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"lr": 2e-3, "seed": 6}))
    monkeypatch.setattr(kernel, "__file__", str(script))
    cfg = kernel.resolve_config(str(config_file), ["seed=9"])
    assert (cfg.epochs, cfg.lr, cfg.seed) == (7, 2e-3, 9)


def test_config_file_errors(kernel, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(kernel.ConfigError, match="cannot read --config"):
        kernel.resolve_config(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(kernel.ConfigError, match="must be a JSON object"):
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


def test_over_budget_run_exits_before_training(tmp_path):
    proc = run_kernel("head=roberta", "lora_r=4", "lora_targets=query,key,value,dense", f"output_dir={tmp_path}")
    assert proc.returncode == 3
    assert "1,257,220" in proc.stdout + proc.stderr and "intermediate.dense" in proc.stderr
    assert "epoch 1" not in proc.stdout and not (tmp_path / "submission.csv").exists()


def test_bad_override_exits_with_one_line(tmp_path):
    proc = run_kernel("epochs=many", f"output_dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key 'epochs' expects int, got 'many'"


# --------------------------------------------------------------------------------------------- data
def write_pickle(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path


TEXTS = ["first row", "second (AP) row", "Zürich third"]


@pytest.mark.parametrize("make", [
    lambda: __import__("datasets").Dataset.from_dict({"text": TEXTS}),
    lambda: pd.DataFrame({"text": TEXTS, "other": [1, 2, 3]}),
    lambda: {"text": list(TEXTS)},
], ids=["dataset", "dataframe", "dict"])
def test_test_loader_variants_keep_order(kernel, tmp_path, make):
    assert kernel.load_test_texts(write_pickle(tmp_path / "t.pkl", make())) == TEXTS


@pytest.mark.parametrize("obj, message", [
    ({"body": ["x"]}, r"has no 'text' column \(columns: body\)"),
    (pd.DataFrame({"text": []}), r"has no rows"),
    ([1, 2, 3], r"holds a list; expected a datasets.Dataset"),
    ({"text": ["ok", None]}, r"row 1 of 'text' is NoneType"),
])
def test_test_loader_errors(kernel, tmp_path, obj, message):
    with pytest.raises(kernel.DataError, match=message):
        kernel.load_test_texts(write_pickle(tmp_path / "t.pkl", obj))


def test_test_loader_empty_and_garbage_files(kernel, tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(kernel.DataError, match="is empty"):
        kernel.load_test_texts(empty)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(kernel.DataError, match="cannot unpickle"):
        kernel.load_test_texts(garbage)


def test_missing_test_file_lists_kaggle_input(kernel, tmp_path):
    (tmp_path / "ag-news").mkdir()
    (tmp_path / "ag-news" / "train.csv").write_text("Class Index,Title,Description\n")
    with pytest.raises(kernel.DataError, match=r"test_unlabelled.pkl not found under .*Found: .*ag-news/train.csv"):
        kernel.resolve_test_path("auto", tmp_path)
    nested = tmp_path / "comp" / "data"
    nested.mkdir(parents=True)
    write_pickle(nested / "test_unlabelled.pkl", {"text": ["x"]})
    assert kernel.resolve_test_path("auto", tmp_path) == nested / "test_unlabelled.pkl"


def test_train_loader_auto_prefers_attached_csv(kernel, tmp_path):
    folder = tmp_path / "ag-news-classification-dataset"
    folder.mkdir()
    pd.DataFrame({"Class Index": [3, 1], "Title": ["T1", "T2"], "Description": ["d1", "d2"]}).to_csv(
        folder / "train.csv", index=False)
    frame = kernel.load_train_frame(kernel.Config(), "auto", tmp_path)
    assert frame["text"].tolist() == ["T1 d1", "T2 d2"] and frame["label"].tolist() == [2, 0]


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
])
def test_submission_validation_errors(kernel, tmp_path, frame, message):
    with pytest.raises(kernel.SubmissionError, match=message):
        kernel.validate_submission(write_csv(tmp_path / "s.csv", frame), 2)


def test_submission_written_atomically(kernel, tmp_path):
    path = tmp_path / "submission.csv"
    kernel.write_submission(path, np.array([3, 0, 1]))
    kernel.validate_submission(path, 3)
    with pytest.raises(kernel.SubmissionError):
        kernel.write_submission(path, np.array([0, 7]))
    assert pd.read_csv(path)["Label"].tolist() == [3, 0, 1]  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


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
    from transformers import AutoModel

    cfg = kernel.config_from_overrides({"smoke": True, "head": head})
    tokenizer = kernel.smoke_tokenizer(["alpha beta gamma delta"] * 20)
    base = tmp_path / "base"
    AutoModel.from_config(kernel.encoder_config(cfg, len(tokenizer))).save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = kernel.load_model(cfg, str(base))
    assert kernel.breakdown_of(model)["head"] == expected
    with torch.no_grad():  # make the head and adapters non-trivial, as after training
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    seqs = kernel.encode_texts(tokenizer, ["alpha beta", "gamma delta alpha", "beta"], 32)
    before = kernel.predict_logits(model, seqs, 2, tokenizer.pad_token_id, torch.device("cpu"), None)
    kernel.save_adapter(model, cfg, tmp_path / "adapter", 1.5, str(base))
    loaded, _, trained, temperature = kernel.load_adapter(cfg, tmp_path / "adapter")
    after = kernel.predict_logits(loaded, seqs, 3, tokenizer.pad_token_id, torch.device("cpu"), None)
    assert trained.head == head and temperature == 1.5
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ whole runs
@pytest.mark.compat
def test_smoke_run_outputs(kernel, smoke_run):
    out, metrics, proc = smoke_run
    kernel.validate_submission(out / "submission.csv", 8000)
    assert METRIC_KEYS <= set(metrics)
    assert metrics["val_accuracy"] >= 0.8, metrics["history"]
    assert metrics["test_rows"] == 8000 and sum(metrics["test_label_distribution"].values()) == 8000
    assert metrics["trainable_params"] == metrics["param_breakdown"]["total"] > 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert set(metrics["history"][0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy"}
    config = json.loads((out / "config.json").read_text())
    assert config["config_hash"] == metrics["config_hash"] and config["smoke"] is True
    probs = pd.read_csv(out / "probabilities.csv")
    assert probs["ID"].tolist() == list(range(8000))
    assert np.allclose(probs[[f"p_{i}" for i in range(4)]].sum(axis=1), 1.0, atol=1e-4)
    labels = pd.read_csv(out / "submission.csv")["Label"].to_numpy()
    assert (probs[[f"p_{i}" for i in range(4)]].to_numpy().argmax(1) == labels).all()
    assert {"adapter_config.json", "head.pt", "kit.json"} <= {p.name for p in (out / "adapter").iterdir()}
    assert "trainable parameters" in proc.stdout and "sample [" in proc.stdout  # banner


def test_smoke_run_plots(smoke_run):
    pytest.importorskip("matplotlib")
    out, metrics, _ = smoke_run
    assert {"curves.png", "confusion.png"} == set(metrics["plots"])
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in metrics["plots"])


def test_predict_only_run_reproduces_predictions(smoke_run, tmp_path):
    out, metrics, _ = smoke_run
    proc = run_kernel("smoke=true", f"adapter_from={out / 'adapter'}", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["predict_only"] is True and again["history"] == [] and again["train_seconds"] == 0
    assert "epoch 1" not in proc.stdout
    assert pd.read_csv(tmp_path / "submission.csv").equals(pd.read_csv(out / "submission.csv"))
    assert again["val_accuracy"] == pytest.approx(metrics["val_accuracy"])


def test_predict_only_rejects_a_folder_without_adapter(tmp_path):
    proc = run_kernel("smoke=true", f"adapter_from={tmp_path}", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and "holds no kit.json" in proc.stderr


def test_time_guard_stops_cleanly_and_still_predicts(kernel, tmp_path):
    proc = run_kernel("smoke=true", "time_limit_minutes=0.0001", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and len(metrics["history"]) == 1
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


def test_shift_options_run(kernel, tmp_path):
    proc = run_kernel("smoke=true", "augment=0.3", "prior_correction=em_uniform", "pseudo_label_rounds=1",
                      "pseudo_label_threshold=0.9", "predict_max_length=64", "epochs=3", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pseudo_label_rows"][0] > 0
    assert metrics["history"][-1]["pseudo_round"] == 1 and len(metrics["history"]) == 4
    assert len(metrics["test_prior_estimate"]) == 4 and abs(sum(metrics["test_prior_estimate"]) - 1) < 1e-3
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


def test_data_parallel_smoke_has_the_same_contract(kernel, smoke_run, tmp_path):
    """Two gloo processes on the CPU: rank 0 alone writes, and the outputs match a single-process run's."""
    single_out, single, _ = smoke_run
    proc = run_kernel("smoke=true", "processes=2", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["processes"] == 2 and "x2 processes" in metrics["device"]
    assert set(metrics) == set(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in single_out.iterdir())
    assert proc.stdout.count("epoch 1:") == 1  # only rank 0 reports
    assert metrics["val_accuracy"] > 0.5
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


def test_minilm_offline_run(kernel, shared_dir, minilm_path, tmp_path):
    """Real pretrained weights and real text, offline: the issue's acceptance run, on 400 training rows and the
    first 500 test rows (as a pickled Dataset, like the competition file) to stay fast."""
    texts = kernel.load_test_texts(shared_dir / "data" / "test_unlabelled.pkl")[:500]
    test_pkl = write_pickle(tmp_path / "test_unlabelled.pkl", __import__("datasets").Dataset.from_dict({"text": texts}))
    proc = run_kernel(f"model={minilm_path}", f"train_data={shared_dir / 'data' / 'ag_news_sample.csv'}",
                      f"test_data={test_pkl}", "epochs=1",
                      "max_train_samples=400", "val_fraction=0.25", "lr=2e-3", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    kernel.validate_submission(tmp_path / "out" / "submission.csv", 500)
    assert metrics["param_breakdown"]["head"] == 384 * 4 + 4
    assert metrics["val_accuracy"] > 0.4  # 300 rows, one epoch: well above chance (0.25)


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
    third_party = {"numpy", "pandas", "torch", "transformers", "peft", "datasets", "tqdm", "tokenizers", "matplotlib"}
    assert roots - set(sys.stdlib_module_names) - {"__future__"} <= third_party


def test_readme_opens_with_the_two_commands_and_documents_every_key(kernel):
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
    for key in kernel.CONFIG_KEYS:
        assert f"| `{key}` |" in readme, key
