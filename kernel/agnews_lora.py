#!/usr/bin/env python3
"""LoRA fine-tuning of a frozen encoder on AG News, under a trainable-parameter budget.

One self-contained Kaggle script (competition `deep-learning-spring-2025-project-2`): it cleans the text,
counts the trainable parameters exactly before anything is loaded, trains LoRA adapters plus a small head
with a plain PyTorch loop (dynamic padding, AMP, data parallel over every visible GPU), predicts the
competition's `test_unlabelled.pkl` and writes `submission.csv`, `probabilities.csv`, `metrics.json`,
`config.json`, `adapter/` and plots into the output folder.

    python agnews_lora.py                                   # on Kaggle: every default
    python agnews_lora.py --set smoke=true                  # offline: tiny model, synthetic data, CPU, ~30 s
    python agnews_lora.py --config run.json --set lr=3e-4   # overrides: block < --config < --set

Only this file is uploaded to Kaggle, so it imports nothing local. `lorakit` (src/) loads it as a module
for the config, the parameter count and the submission checks.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import html
import json
import math
import os
import pickle
import platform
import random
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

# The JSON object between these two markers overrides the defaults below; `lorakit push` rewrites it in a
# build copy of this script, so a pushed version carries its own config.
OVERRIDES_BEGIN = "# >>> lorakit overrides >>>"
OVERRIDES_END = "# <<< lorakit overrides <<<"
# >>> lorakit overrides >>>
OVERRIDES_JSON = r"""
{}
"""
# <<< lorakit overrides <<<

LABELS = ("World", "Sports", "Business", "Sci/Tech")
COMPETITION = "deep-learning-spring-2025-project-2"
TEST_FILE_NAME = "test_unlabelled.pkl"
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
AG_NEWS_COLUMNS = ("Class Index", "Title", "Description")

# roberta-base's architecture (public facts from its config.json), so counting needs no download.
ROBERTA_BASE_ARCH = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


# --------------------------------------------------------------------------------------------- errors
class KernelError(Exception):
    """A user-facing failure: printed as one line, exit status non-zero."""

    exit_code = 2


class ConfigError(KernelError):
    pass


class BudgetError(KernelError):
    exit_code = 3


class DataError(KernelError):
    pass


class SubmissionError(KernelError):
    pass


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    # data
    model: str = "roberta-base"  # hub id or a local folder with pretrained weights (e.g. under /kaggle/input)
    train_data: str = "auto"  # auto | path to a CSV (Class Index,Title,Description) | hf:ag_news
    test_data: str = "auto"  # auto: find test_unlabelled.pkl under /kaggle/input | path to a pickle
    output_dir: str = "auto"  # auto: /kaggle/working on Kaggle, ./outputs elsewhere
    max_train_samples: int = 0  # training rows used before the split; 0 = all
    val_fraction: float = 0.05  # stratified held-out share of the training rows, in (0, 0.5]
    # LoRA and head
    lora_r: int = 16  # LoRA rank, >= 1
    lora_alpha: float = 32.0  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.1  # dropout on the LoRA input, [0, 1)
    lora_targets: str = "query,value"  # comma-separated: query,key,value,dense or exact in-layer names
    lora_layers: str = "all"  # all | top:K (the last K encoder layers)
    head: str = "linear"  # linear: dropout + Linear(hidden, 4) | roberta: the default 2-layer head
    head_dropout: float = 0.1  # dropout before the head, [0, 1)
    # optimisation
    epochs: int = 3  # passes over the training rows
    lr: float = 5e-4  # peak AdamW learning rate
    batch_size: int = 32  # rows per step and process
    max_length: int = 128  # training truncation, in tokens (with <s> and </s>)
    predict_max_length: int = 256  # prediction truncation in tokens (generated test rows are long); 0 = max_length
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_ratio: float = 0.06  # share of steps with a linear warm-up, then linear decay to 0
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    precision: str = "auto"  # auto (bf16 if supported, else fp16 on GPU; fp32 on CPU) | fp32 | fp16 | bf16
    processes: int = 0  # data-parallel processes; 0 = one per visible GPU (1 on CPU)
    eval_batch_size: int = 128  # rows per prediction batch
    seed: int = 42  # seeds the split, batching, init and noise
    augment: float = 0.0  # probability per row and epoch of cheap noise (case, truncation, typos), [0, 1]
    # prediction
    prior_correction: str = "none"  # none | em | em_uniform: EM re-estimate of the test label prior
    pseudo_label_rounds: int = 0  # rounds of training on train + confident test rows
    pseudo_label_threshold: float = 0.95  # min probability for a test row to become a pseudo-label
    adapter_from: str = ""  # path to a previous run's adapter/: predict only, no training
    # guards
    param_budget: int = 1_000_000  # max trainable parameters, head included
    time_limit_minutes: float = 660.0  # training stops cleanly after this, leaving time to predict
    smoke: bool = False  # offline: tiny model, synthetic data, CPU-sized


CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Config))
# What lorakit (src/) and bench/ use of this script, through lorakit's one loader; a test checks each resolves.
PUBLIC_API = (
    "Config", "CONFIG_KEYS", "HEADS", "KernelError", "LABELS",
    "parse_sets", "apply_overrides", "config_from_overrides", "read_overrides_block", "render_overrides",
    "config_hash", "param_breakdown", "breakdown_of", "format_breakdown", "build_model",
    "clean_text", "read_ag_news_csv", "load_test_texts", "stratified_split", "encode_texts",
    "length_grouped_batches", "sorted_batches", "pad_batch", "autocast_dtype", "grad_scaler",
    "make_optimizer", "make_scheduler", "train_step", "trainable_state", "load_trainable_state",
    "predict_logits", "fit_temperature", "corrected_probabilities", "load_adapter", "run",
    "validate_submission",
)
HASH_EXCLUDED = ("output_dir", "train_data", "test_data")
HEADS = ("linear", "roberta")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PRIOR_CORRECTIONS = ("none", "em", "em_uniform")


def _field_type(key: str) -> type:
    return {"int": int, "float": float, "str": str, "bool": bool}[Config.__dataclass_fields__[key].type]


def _unknown_key(key: str) -> ConfigError:
    return ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(CONFIG_KEYS)}")


def _typed(key: str, value):
    """A JSON value checked against the field's type (ints are accepted for floats)."""
    if key not in CONFIG_KEYS:
        raise _unknown_key(key)
    want = _field_type(key)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key {key!r} expects {want.__name__}, got {value!r}")


def parse_sets(items: list[str]) -> dict:
    """`key=value` strings (as given to --set) to a typed dict; booleans are true/false."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key not in CONFIG_KEYS:
            raise _unknown_key(key)
        want = _field_type(key)
        try:
            if want is bool:
                if text not in ("true", "false"):
                    raise ValueError
                out[key] = text == "true"
            else:
                out[key] = want(text)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects {want.__name__}, got {text!r}") from None
    return out


def apply_overrides(cfg: Config, overrides: dict) -> Config:
    return validate_config(dataclasses.replace(cfg, **{k: _typed(k, v) for k, v in overrides.items()}))


def validate_config(cfg: Config) -> Config:
    """Range and choice checks, so a bad value fails before any work."""
    problems = []
    if cfg.head not in HEADS:
        problems.append(f"head must be one of {', '.join(HEADS)}")
    if cfg.precision not in PRECISIONS:
        problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
    if cfg.prior_correction not in PRIOR_CORRECTIONS:
        problems.append(f"prior_correction must be one of {', '.join(PRIOR_CORRECTIONS)}")
    if not re.fullmatch(r"all|top:[1-9]\d*", cfg.lora_layers):
        problems.append("lora_layers must be 'all' or 'top:K' with K >= 1")
    if not [t for t in cfg.lora_targets.split(",") if t.strip()]:
        problems.append("lora_targets must name at least one module")
    for key, low, high in (("val_fraction", 0.0, 0.5), ("pseudo_label_threshold", 0.0, 1.0)):
        if not low < getattr(cfg, key) <= high:
            problems.append(f"{key} must be in ({low}, {high}]")
    for key in ("lora_dropout", "head_dropout"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            problems.append(f"{key} must be in [0, 1)")
    if not 0.0 <= cfg.augment <= 1.0:
        problems.append("augment must be in [0, 1]")
    for key in ("lora_r", "epochs", "batch_size", "eval_batch_size", "param_budget"):
        if getattr(cfg, key) < 1:
            problems.append(f"{key} must be >= 1")
    if cfg.max_length < 8:
        problems.append("max_length must be >= 8")
    for key in ("max_train_samples", "predict_max_length", "processes", "pseudo_label_rounds"):
        if getattr(cfg, key) < 0:
            problems.append(f"{key} must be >= 0")
    for key in ("lr", "time_limit_minutes"):
        if getattr(cfg, key) <= 0:
            problems.append(f"{key} must be > 0")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return cfg


_BLOCK_RE = re.compile(
    "^" + re.escape(OVERRIDES_BEGIN) + '\nOVERRIDES_JSON = r"""\n(.*?)\n"""\n' + re.escape(OVERRIDES_END) + "$",
    re.S | re.M,
)


def _overrides_match(script_text: str) -> re.Match:
    match = _BLOCK_RE.search(script_text)
    if not match:
        raise ConfigError("the overrides block markers are missing or damaged in the kernel script")
    return match


def read_overrides_block(script_text: str) -> dict:
    try:
        block = json.loads(_overrides_match(script_text).group(1))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the overrides block is not valid JSON: {exc}") from None
    if not isinstance(block, dict):
        raise ConfigError("the overrides block must hold a JSON object")
    return block


def render_overrides(script_text: str, overrides: dict) -> str:
    """The script with its overrides block replaced by `overrides` (checked first)."""
    match = _overrides_match(script_text)
    config_from_overrides(overrides)
    body = json.dumps(overrides, indent=2, sort_keys=True)
    if '"""' in body:
        raise ConfigError('override values may not contain """')
    start, end = match.span(1)
    return script_text[:start] + body + script_text[end:]


def config_from_overrides(*layers: dict) -> Config:
    """The effective config: defaults (smoke runs start from SMOKE_DEFAULTS), then each layer in order."""
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(f"overrides must be a JSON object, got {type(layer).__name__}")
    merged = {k: _typed(k, v) for layer in layers for k, v in layer.items()}
    base = dataclasses.replace(Config(), **SMOKE_DEFAULTS) if merged.get("smoke") else Config()
    return apply_overrides(base, merged)


def resolve_config(config_file: str | None = None, sets: list[str] = ()) -> Config:
    """Defaults < the overrides block of this file < --config FILE < --set key=value."""
    block = read_overrides_block(Path(__file__).read_text(encoding="utf-8"))
    from_file = {}
    if config_file:
        try:
            from_file = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read --config {config_file}: {exc}") from None
    return config_from_overrides(block, from_file, parse_sets(list(sets)))


def config_hash(cfg: Config) -> str:
    """sha256 of the canonical JSON of the effective config, without the output folder and data paths."""
    data = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in HASH_EXCLUDED}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def on_kaggle() -> bool:
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or KAGGLE_WORKING.is_dir()


def output_path(cfg: Config) -> Path:
    if cfg.output_dir != "auto":
        return Path(cfg.output_dir)
    return KAGGLE_WORKING if on_kaggle() else Path("outputs")


# ---------------------------------------------------------------------------------------------- model
def encoder_config(cfg: Config, vocab_size: int | None = None):
    """The transformers config of the encoder the run uses, without downloading weights."""
    from transformers import AutoConfig, RobertaConfig

    if cfg.smoke:
        return RobertaConfig(**SMOKE_ARCH, vocab_size=vocab_size or SMOKE_VOCAB)
    if cfg.model == "roberta-base":
        return RobertaConfig(**{k: v for k, v in ROBERTA_BASE_ARCH.items() if k != "model_type"})
    return AutoConfig.from_pretrained(cfg.model)


def build_head(kind: str, hidden_size: int, dropout: float, num_labels: int = len(LABELS)) -> nn.Module:
    """Every head, built from the encoder's hidden size; it reads the first token's final state."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_labels))
    if kind == "roberta":  # RobertaClassificationHead's shape: dense + tanh + out_proj
        return nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )
    raise ConfigError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")


class Classifier(nn.Module):
    """A (LoRA-wrapped) encoder and a head on the first token's final hidden state."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[:, 0])


_LAYER_RE = re.compile(r"^(?:.*\.)?layers?\.(\d+)\.(.+)$")


def lora_module_names(encoder: nn.Module, targets: str, layers: str) -> list[str]:
    """Exact names of the Linear modules inside encoder layers that the targets select.

    A target with a dot must equal the in-layer name (`output.dense` is the FFN output only, not
    `attention.output.dense`); a bare name matches the last component (`dense` = every dense in a layer).
    Exact names keep PEFT's suffix matching from reaching modules outside the layers.
    """
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    found: dict[str, list[str]] = {t: [] for t in wanted}
    in_layer: list[tuple[int, str, str]] = []
    for name, module in encoder.named_modules():
        match = _LAYER_RE.match(name)
        if match and isinstance(module, nn.Linear):
            in_layer.append((int(match.group(1)), match.group(2), name))
    if not in_layer:
        raise ConfigError("the encoder has no Linear modules inside numbered layers for LoRA")
    n_layers = max(index for index, _, _ in in_layer) + 1
    first = 0 if layers == "all" else max(0, n_layers - int(layers.split(":")[1]))
    for index, rel, name in in_layer:
        for target in wanted:
            hit = rel == target if "." in target else rel.rsplit(".", 1)[-1] == target
            if hit:
                found[target].append(name)
    missing = [t for t, names in found.items() if not names]
    if missing:
        choices = sorted({rel for _, rel, _ in in_layer})
        raise ConfigError(f"lora target(s) {', '.join(missing)} match no module; in-layer names: {', '.join(choices)}")
    return sorted({n for names in found.values() for n in names if int(_LAYER_RE.match(n).group(1)) >= first})


def attach_lora(encoder: nn.Module, cfg: Config) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    names = lora_module_names(encoder, cfg.lora_targets, cfg.lora_layers)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=names, bias="none")
    return get_peft_model(encoder, lora)


def build_model(cfg: Config, econf=None, pretrained: bool = True) -> Classifier:
    """Encoder (pretrained, or from a config: smoke runs and meta-device counts) + LoRA + head."""
    from transformers import AutoModel

    if pretrained and not cfg.smoke:
        encoder = AutoModel.from_pretrained(cfg.model)
    else:
        encoder = AutoModel.from_config(econf if econf is not None else encoder_config(cfg))
    for p in encoder.parameters():
        p.requires_grad_(False)
    head = build_head(cfg.head, encoder.config.hidden_size, cfg.head_dropout)
    return Classifier(attach_lora(encoder, cfg), head)


def breakdown_of(model: Classifier) -> dict:
    """Trainable parameters as PEFT counts them (every requires_grad tensor), by LoRA module type."""
    lora: dict[str, int] = {}
    other = 0
    for name, p in model.encoder.named_parameters():
        if not p.requires_grad:
            continue
        match = _LAYER_RE.match(name.split(".lora_", 1)[0])
        if ".lora_" in name and match:
            lora[match.group(2)] = lora.get(match.group(2), 0) + p.numel()
        else:
            other += p.numel()
    head = sum(p.numel() for p in model.head.parameters() if p.requires_grad)
    return {"lora": dict(sorted(lora.items())), "head": head, "other": other,
            "total": sum(lora.values()) + head + other}


def param_breakdown(cfg: Config) -> dict:
    """The exact trainable count of `cfg`, on the `meta` device: no weights, no download, ~1 s."""
    with torch.device("meta"):
        return breakdown_of(build_model(cfg, pretrained=False))


def format_breakdown(breakdown: dict, budget: int) -> str:
    rows = [f"  lora {name:<28} {n:>10,}" for name, n in breakdown["lora"].items()]
    rows += [f"  {'head':<33} {breakdown['head']:>10,}", f"  {'other':<33} {breakdown['other']:>10,}"]
    verdict = "within" if breakdown["total"] <= budget else "OVER"
    rows.append(f"  {'total':<33} {breakdown['total']:>10,}  ({verdict} budget {budget:,})")
    return "trainable parameters:\n" + "\n".join(rows)


def check_budget(cfg: Config, breakdown: dict) -> None:
    if breakdown["total"] > cfg.param_budget:
        raise BudgetError(
            f"{breakdown['total']:,} trainable parameters exceed param_budget {cfg.param_budget:,}\n"
            + format_breakdown(breakdown, cfg.param_budget)
        )


# ----------------------------------------------------------------------------------------------- data
_AG_CODE = re.compile(r"( ?)#(\d{2,5});")  # AG News writes "doesn #39;t" for "doesn&#39;t", "#36;" for "$"
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]{0,200})?/?>")  # real tags only: tickers like <TXN.N> stay
_URL = re.compile(r"(?:https?://|www\.)([^\s/]+)\S*")


def clean_text(text: str) -> str:
    """One cleaning for every split: HTML codes and entities, tags, backslashes, URLs, whitespace.

    It keeps parenthesised passages and non-ASCII text: the generated half of the test file is full of both.
    """
    text = _AG_CODE.sub(lambda m: ("" if m.group(2) == "39" else m.group(1)) + f"&#{m.group(2)};", str(text))
    for _ in range(2):  # AG News double-escapes some entities (&amp;lt;b&amp;gt;)
        text = html.unescape(text)
    text = _TAG.sub(" ", text)
    text = _URL.sub(lambda m: " " + m.group(1).removeprefix("www.") + " ", text)
    text = text.replace("\\", " ")
    return " ".join(text.split())


def read_ag_news_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read training CSV {path}: {exc}") from None
    missing = [c for c in AG_NEWS_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected {','.join(AG_NEWS_COLUMNS)}")
    labels = pd.to_numeric(frame["Class Index"], errors="coerce") - 1
    if frame.empty or labels.isna().any() or not labels.isin(range(len(LABELS))).all():
        raise DataError(f"{path}: 'Class Index' must hold 1-4 on every row (and the file must have rows)")
    text = frame["Title"].fillna("").astype(str) + " " + frame["Description"].fillna("").astype(str)
    return pd.DataFrame({"text": text, "label": labels.astype(int)})


def find_input_file(name: str, root: Path = KAGGLE_INPUT, columns: tuple = ()) -> Path | None:
    """The first `name` under the Kaggle input root (for CSVs: one that has `columns`)."""
    for path in sorted(root.rglob(name)) if root.is_dir() else []:
        if not columns or set(columns) <= set(pd.read_csv(path, nrows=0).columns):
            return path
    return None


def input_listing(root: Path = KAGGLE_INPUT, limit: int = 40) -> str:
    if not root.is_dir():
        return f"{root} does not exist"
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    more = f" ... and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(files[:limit]) + more if files else f"{root} is empty"


def load_train_frame(cfg: Config, source: str, root: Path = KAGGLE_INPUT) -> pd.DataFrame:
    """Training rows as text + label (0-3), from an attached Kaggle CSV, a CSV path or the HF dataset."""
    if source == "auto":
        found = find_input_file("train.csv", root, AG_NEWS_COLUMNS)
        source = str(found) if found else "hf:ag_news"
    if source == "hf:ag_news":
        from datasets import load_dataset

        split = load_dataset("ag_news", split="train")
        return pd.DataFrame({"text": list(split["text"]), "label": list(split["label"])})
    if not Path(source).is_file():
        raise DataError(f"training data {source} not found")
    return read_ag_news_csv(Path(source))


def resolve_test_path(source: str, root: Path = KAGGLE_INPUT) -> Path:
    if source == "auto":
        found = find_input_file(TEST_FILE_NAME, root)
        if found is None:
            raise DataError(f"{TEST_FILE_NAME} not found under {root}; attach the competition "
                            f"{COMPETITION}. Found: {input_listing(root)}")
        return found
    if not Path(source).is_file():
        raise DataError(f"test data {source} not found")
    return Path(source)


def load_test_texts(path: Path) -> list[str]:
    """The `text` column of a pickled datasets.Dataset, DataFrame or dict of lists, in row (ID) order."""
    try:
        with open(path, "rb") as handle:
            obj = pickle.load(handle)
    except EOFError:
        raise DataError(f"{path} is empty") from None
    except Exception as exc:  # a foreign pickle fails in many ways; every one is the same user error
        raise DataError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from None
    if hasattr(obj, "column_names") and hasattr(obj, "num_rows"):  # datasets.Dataset: read the column
        columns = list(obj.column_names)
        texts = list(obj["text"]) if "text" in columns else None
    elif isinstance(obj, pd.DataFrame):
        columns = list(obj.columns)
        texts = obj["text"].tolist() if "text" in columns else None
    elif isinstance(obj, dict):
        columns = list(obj)
        texts = list(obj["text"]) if "text" in obj else None
    else:
        raise DataError(f"{path} holds a {type(obj).__name__}; expected a datasets.Dataset, a DataFrame "
                        "or a dict with a 'text' column")
    if texts is None:
        raise DataError(f"{path} has no 'text' column (columns: {', '.join(map(str, columns)) or 'none'})")
    if not texts:
        raise DataError(f"{path} has no rows")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad} of 'text' is {type(texts[bad]).__name__}, not a string")
    return texts


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, the same share of every class held out."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, int(round(len(rows) * fraction)))
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def augment_text(text: str, rng: random.Random) -> str:
    """One cheap noise that mimics the generated half of the test file: case, truncation or typos."""
    if not text:
        return text
    kind = rng.randrange(3)
    if kind == 0:
        return text.lower() if rng.random() < 0.7 else text.upper()
    if kind == 1:
        return text[: max(20, int(len(text) * rng.uniform(0.4, 0.9)))]
    chars = list(text)
    for _ in range(max(1, len(chars) // 30)):
        i = rng.randrange(len(chars))
        op = rng.randrange(3)
        if op == 0:
            chars[i] = ""
        elif op == 1:
            chars[i] = chars[i] * 2
        else:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


# ------------------------------------------------------------------------------------------- batching
def encode_texts(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with <s> and </s>, truncated, unpadded: the one preprocessing for every split."""
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                           pool: int = 64) -> list[np.ndarray]:
    """Shuffled batches of rows of similar length: sort within random pools of `pool` batches."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = order[start:start + pool * batch_size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Prediction batches in length order (longest first), so each pads to a near neighbour."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(seqs: list[list[int]], pad_id: int, device: torch.device):
    """input_ids and attention_mask padded to the batch's longest row (on GPU rounded up to 8 for tensor cores)."""
    width = max(len(s) for s in seqs)
    if device.type == "cuda":
        width = -(-width // 8) * 8
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


# ------------------------------------------------------------------------------------------- training
def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None means fp32. T4s have no bf16, so auto picks fp16 there (with a GradScaler)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def grad_scaler(dtype: torch.dtype | None):
    """A GradScaler for fp16 (a pass-through otherwise): torch >= 2.3 has torch.amp's, older only cuda's."""
    scaler_cls = getattr(torch.amp, "GradScaler", None)
    if scaler_cls is None:
        return torch.cuda.amp.GradScaler(enabled=dtype is torch.float16)
    return scaler_cls("cuda", enabled=dtype is torch.float16)


def make_optimizer(params: list, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def make_scheduler(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_step(model, ids, mask, labels, optimizer, scheduler, scaler, dtype, grad_clip: float) -> torch.Tensor:
    """One optimizer step; returns the loss on the device (no host sync)."""
    with torch.autocast(device_type=ids.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(ids, mask)
    loss = F.cross_entropy(logits.float(), labels)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return loss.detach()


@torch.no_grad()
def predict_logits(model, seqs: list[list[int]], batch_size: int, pad_id: int, device, dtype,
                   desc: str = "predict") -> np.ndarray:
    """Logits in the input's order; batches run in length order and the order is restored after."""
    from tqdm.auto import tqdm

    model.eval()
    lengths = np.array([len(s) for s in seqs])
    out = np.zeros((len(seqs), len(LABELS)), dtype=np.float32)
    for batch in tqdm(sorted_batches(lengths, batch_size), desc=desc, leave=False, disable=None):
        ids, mask = pad_batch([seqs[i] for i in batch], pad_id, device)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out[batch] = model(ids, mask).float().cpu().numpy()
    return out


def trainable_state(model: Classifier) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_trainable_state(model: Classifier, state: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


@dataclass
class TrainData:
    """What the training loop needs: token ids per epoch (augmentation varies them) and labels."""

    epoch_ids: list  # per epoch: a list of token-id lists, one per training row
    labels: np.ndarray
    val_ids: list
    val_labels: np.ndarray
    pad_id: int
    encoder_source: str  # where each process loads the encoder from (a hub id or a folder)


def train_loop(cfg: Config, data: TrainData, model: Classifier, device: torch.device, rank: int = 0,
               world: int = 1, deadline: float = math.inf, epochs: int | None = None) -> dict:
    """AdamW with warm-up then decay; evaluates every epoch and keeps the best state (rank 0 holds it)."""
    from tqdm.auto import tqdm

    epochs = epochs or cfg.epochs
    dtype = autocast_dtype(device, cfg.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    rng = np.random.default_rng(cfg.seed)
    lengths = [np.array([len(s) for s in ids]) for ids in data.epoch_ids]
    steps_per_epoch = len(length_grouped_batches(lengths[0], cfg.batch_size, rng)) // world
    optimizer = make_optimizer(params, cfg, device)
    scheduler = make_scheduler(optimizer, steps_per_epoch * epochs, cfg.warmup_ratio)
    scaler = grad_scaler(dtype)
    history, best, best_acc, stopped = [], None, -1.0, False
    seen = tokens = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        ids_epoch = data.epoch_ids[epoch % len(data.epoch_ids)]
        batches = length_grouped_batches(lengths[epoch % len(lengths)], cfg.batch_size, rng)
        batches = batches[: steps_per_epoch * world][rank::world]
        net.train()
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", disable=rank != 0 or None)
        step = 0
        for step, batch in enumerate(bar):
            seqs = [ids_epoch[i] for i in batch]
            ids, mask = pad_batch(seqs, data.pad_id, device)
            labels = torch.as_tensor(data.labels[batch], device=device)
            loss_sum += train_step(net, ids, mask, labels, optimizer, scheduler, scaler, dtype, cfg.grad_clip)
            seen += len(batch) * world
            tokens += sum(len(s) for s in seqs) * world
            if step % 25 == 24 or step == len(batches) - 1:
                if rank == 0:
                    rate = seen / (time.perf_counter() - start)
                    bar.set_postfix(loss=f"{loss_sum.item() / (step + 1):.4f}",
                                    lr=f"{scheduler.get_last_lr()[0]:.2e}", samples_s=f"{rate:.0f}")
                stopped = any_rank(time.monotonic() > deadline, device, world)
                if stopped:
                    break
        bar.close()
        train_loss = reduce_mean(loss_sum.item() / max(1, step + 1), device, world)
        val_loss, val_acc = evaluate(model, data, cfg, device, dtype, rank, world)
        history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
                        "val_accuracy": round(val_acc, 5), "stopped_early": stopped})
        if rank == 0:
            print(f"epoch {epoch + 1}: train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
                  + ("  (time limit reached: stopping)" if stopped else ""), flush=True)
        if val_acc > best_acc:
            best_acc, best = val_acc, trainable_state(model) if rank == 0 else None
        if stopped:
            break
    seconds = time.perf_counter() - start
    return {"state": best, "history": history, "train_seconds": seconds, "samples": seen, "tokens": tokens,
            "stopped_early": stopped}


def evaluate(model, data: TrainData, cfg: Config, device, dtype, rank: int, world: int) -> tuple[float, float]:
    """Validation loss and accuracy; each rank scores a shard and the sums are all-reduced."""
    shard = np.arange(rank, len(data.val_ids), world)
    logits = predict_logits(model, [data.val_ids[i] for i in shard], cfg.eval_batch_size, data.pad_id,
                            device, dtype, desc="validate")
    labels = data.val_labels[shard]
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="sum").item()
    sums = reduce_sum([loss, float((logits.argmax(1) == labels).sum()), float(len(shard))], device, world)
    return sums[0] / sums[2], sums[1] / sums[2]


def reduce_sum(values: list[float], device, world: int) -> list[float]:
    if world == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def reduce_mean(value: float, device, world: int) -> float:
    return reduce_sum([value], device, world)[0] / world


def any_rank(flag: bool, device, world: int) -> bool:
    """The time guard must stop every rank at the same step, or DDP would hang."""
    return reduce_sum([float(flag)], device, world)[0] > 0


# ------------------------------------------------------------------------------------ data parallel
def process_count(cfg: Config) -> int:
    if cfg.processes:
        return cfg.processes
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, cfg: Config, data: TrainData, state: dict | None,
               deadline_in: float, epochs: int, result_path: str) -> None:
    """One data-parallel rank: train, then rank 0 alone saves the best state; the others just exit."""
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # ranks share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        torch.manual_seed(cfg.seed)
        model = load_model(cfg, data.encoder_source).to(device)
        if state is not None:
            load_trainable_state(model, state)
        result = train_loop(cfg, data, model, device, rank, world, time.monotonic() + deadline_in, epochs)
        if rank == 0:
            torch.save(result, result_path)
    finally:
        dist.destroy_process_group()


def train(cfg: Config, data: TrainData, model: Classifier | None, device, deadline: float,
          epochs: int | None = None) -> dict:
    """Trains in this process, or data-parallel over `processes` spawned ranks when there are several."""
    world = process_count(cfg)
    if world == 1:
        return train_loop(cfg, data, model, device, 0, 1, deadline, epochs)
    import torch.multiprocessing as mp

    state = trainable_state(model) if model is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.pt")
        mp.spawn(ddp_worker, nprocs=world, join=True,
                 args=(world, free_port(), cfg, data, state, deadline - time.monotonic(),
                       epochs or cfg.epochs, result_path))
        return torch.load(result_path, weights_only=False)


# ----------------------------------------------------------------------------------------- prediction
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises validation NLL (a log-spaced grid): EM needs calibrated probabilities."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 241))
    nll = [-np.log(softmax(logits / t)[np.arange(len(labels)), labels] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def em_prior(probs: np.ndarray, train_prior: np.ndarray, iterations: int = 200) -> np.ndarray:
    """The test label prior by EM (Saerens, Latinne & Decaestecker 2002)."""
    prior = train_prior.copy()
    for _ in range(iterations):
        adjusted = reweight(probs, prior, train_prior)
        new = adjusted.mean(axis=0)
        if np.abs(new - prior).max() < 1e-7:
            break
        prior = new
    return prior


def reweight(probs: np.ndarray, prior: np.ndarray, train_prior: np.ndarray) -> np.ndarray:
    adjusted = probs * (prior / train_prior)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def corrected_probabilities(test_logits: np.ndarray, temperature: float, method: str,
                            train_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Test probabilities after temperature scaling and (optionally) the EM prior correction."""
    probs = softmax(test_logits / temperature)
    if method == "none":
        return probs, None
    prior = em_prior(probs, train_prior)
    if method == "em_uniform":  # halfway to uniform: EM alone can over-commit to the shifted half's skew
        prior = (prior + np.full_like(prior, 1.0 / len(prior))) / 2
    return reweight(probs, prior, train_prior), prior


# -------------------------------------------------------------------------------------------- outputs
def atomic_write(path: Path, write) -> None:
    """Writes through a temporary file in the same folder, then renames: no partial file ever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def submission_problem(frame: pd.DataFrame, expected_rows: int) -> str | None:
    """Why a submission frame is invalid, or None: the one rule set for the kernel and lorakit."""
    if list(frame.columns) != ["ID", "Label"]:
        return f"columns must be exactly ID,Label, got {','.join(map(str, frame.columns))}"
    if len(frame) != expected_rows:
        return f"{len(frame)} rows, expected {expected_rows}"
    for column in ("ID", "Label"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            return f"{column} must hold integers on every row"
    ids = frame["ID"].astype(np.int64)
    if ids.duplicated().any():
        return f"ID has duplicates (e.g. {int(ids[ids.duplicated()].iloc[0])})"
    if set(ids) != set(range(expected_rows)):
        return f"IDs must be exactly 0..{expected_rows - 1}"
    bad = ~frame["Label"].astype(np.int64).isin(range(len(LABELS)))
    if bad.any():
        return f"Label must be 0-3; row {int(np.flatnonzero(bad)[0])} holds {frame['Label'][bad].iloc[0]}"
    return None


def validate_submission(path, expected_rows: int) -> None:
    """Raises SubmissionError with one line when the CSV at `path` is not a valid submission."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"cannot read {path}: {exc}") from None
    problem = submission_problem(frame, expected_rows)
    if problem:
        raise SubmissionError(f"{path}: {problem}")


def write_submission(path: Path, labels: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        pd.DataFrame({"ID": np.arange(len(labels)), "Label": labels.astype(int)}).to_csv(tmp, index=False)
        validate_submission(tmp, len(labels))

    atomic_write(path, write)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def save_adapter(model: Classifier, cfg: Config, folder: Path, temperature: float, encoder_source: str) -> None:
    """The LoRA adapter (PEFT format), the head's weights and what reloading needs, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(folder))
    torch.save(model.head.state_dict(), folder / "head.pt")
    if cfg.smoke:
        # the tiny encoder's weights are random: keep them (and its tokenizer) so the adapter reloads onto them
        shutil.copytree(encoder_source, folder / "base", dirs_exist_ok=True)
    write_json(folder / "kit.json", {"config": dataclasses.asdict(cfg), "temperature": temperature,
                                     "hidden_size": model.encoder.get_base_model().config.hidden_size})


def load_adapter(cfg: Config, folder: Path) -> tuple[Classifier, object, Config, float]:
    """Model, tokenizer, the trained run's config and its temperature, from a saved adapter folder."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    if not (folder / "kit.json").is_file():
        raise ConfigError(f"adapter_from {folder} holds no kit.json; point it at a previous run's adapter/")
    kit = json.loads((folder / "kit.json").read_text(encoding="utf-8"))
    trained = apply_overrides(Config(), {k: v for k, v in kit["config"].items() if k in CONFIG_KEYS})
    # The run's own `model` wins when set; by default the trained run's base model is used.
    base_source = cfg.model if cfg.model != Config.model else trained.model
    base_source = str(folder / "base") if (folder / "base").is_dir() else base_source
    encoder = AutoModel.from_pretrained(base_source)
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder = PeftModel.from_pretrained(encoder, str(folder))
    head = build_head(trained.head, encoder.get_base_model().config.hidden_size, trained.head_dropout)
    head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu"))
    return Classifier(encoder, head), AutoTokenizer.from_pretrained(base_source), trained, kit["temperature"]


def save_plots(out: Path, history: list[dict], confusion: np.ndarray) -> list[str]:
    """Loss and accuracy curves and the normalised confusion matrix; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: plots skipped")
        return []
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss")
    axes[0].legend()
    axes[1].plot(epochs, [h["val_accuracy"] for h in history], "o-")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    norm = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(norm):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set(xticks=range(len(LABELS)), yticks=range(len(LABELS)), xticklabels=LABELS, yticklabels=LABELS,
           xlabel="predicted", ylabel="true", title="Validation confusion (row-normalised)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)
    return ["curves.png", "confusion.png"]


def library_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "numpy", "pandas", "pyarrow"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


# ------------------------------------------------------------------------------------------ smoke mode
SMOKE_VOCAB = 800
# A tiny random encoder needs a larger step than a pretrained one; explicit overrides still win.
SMOKE_DEFAULTS = {"lr": 5e-3, "epochs": 4, "val_fraction": 0.2, "batch_size": 16}
SMOKE_ARCH = {  # a tiny RoBERTa; initializer_range 0.2 keeps the first token input-dependent
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "max_position_embeddings": 260, "type_vocab_size": 1, "initializer_range": 0.2,
    "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}
SMOKE_KEYWORDS = (
    ("election", "minister", "embassy", "parliament", "ceasefire", "refugees", "treaty", "diplomat"),
    ("goal", "striker", "tournament", "coach", "playoff", "quarterback", "medal", "stadium"),
    ("earnings", "shares", "merger", "investors", "profit", "retailer", "dividend", "quarterly"),
    ("software", "chip", "internet", "processor", "spacecraft", "genome", "browser", "wireless"),
)
SMOKE_FILLER = ("the", "a", "on", "in", "said", "after", "new", "year", "report", "today", "with", "over",
                "from", "week", "first", "people", "plans", "officials", "monday", "group", "could", "more")


def smoke_texts(n: int, rng: random.Random, noisy: bool = False) -> tuple[list[str], list[int]]:
    """Rows separable by class keywords, inside filler; `noisy` adds case changes and cuts."""
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(len(LABELS))
        words = [rng.choice(SMOKE_FILLER) for _ in range(rng.randint(8, 30))]
        for _ in range(rng.randint(2, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(SMOKE_KEYWORDS[label]))
        text = " ".join(words)
        texts.append(augment_text(text, rng) if noisy and rng.random() < 0.3 else text)
        labels.append(label)
    return texts, labels


def make_smoke_inputs(folder: Path, seed: int) -> tuple[Path, Path]:
    """A synthetic training CSV in the AG News layout and an 8000-row test pickle shaped like the real one."""
    rng = random.Random(seed)
    texts, labels = smoke_texts(3000, rng)
    titles = [" ".join(t.split()[:4]) for t in texts]
    bodies = [" ".join(t.split()[4:]) for t in texts]
    train_csv = folder / "train.csv"
    pd.DataFrame({"Class Index": [y + 1 for y in labels], "Title": titles, "Description": bodies}).to_csv(
        train_csv, index=False)
    test_texts, _ = smoke_texts(8000, rng, noisy=True)
    try:
        from datasets import Dataset

        test_obj = Dataset.from_dict({"text": test_texts})
    except ImportError:
        test_obj = pd.DataFrame({"text": test_texts})
    test_pkl = folder / TEST_FILE_NAME
    with open(test_pkl, "wb") as handle:
        pickle.dump(test_obj, handle)
    return train_csv, test_pkl


def smoke_tokenizer(texts: list[str]):
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained here in a fraction of a second."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=SMOKE_VOCAB, min_frequency=1, special_tokens=specials,
                            show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                   sep_token="</s>", cls_token="<s>", pad_token="<pad>", unk_token="<unk>",
                                   mask_token="<mask>")


# ---------------------------------------------------------------------------------------------- main
def load_model(cfg: Config, encoder_source) -> Classifier:
    """The model to train: smoke runs build the tiny encoder from its saved folder, others load weights."""
    if cfg.smoke:
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(encoder_source)
        for p in encoder.parameters():
            p.requires_grad_(False)
        head = build_head(cfg.head, encoder.config.hidden_size, cfg.head_dropout)
        return Classifier(attach_lora(encoder, cfg), head)
    return build_model(cfg)


def describe_device(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{world}" if world > 1 else torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)" + (f" x{world} processes" if world > 1 else "")


def run(cfg: Config) -> dict:
    """The whole job; returns metrics. Every output lands in the output folder."""
    t0 = time.monotonic()
    deadline = t0 + cfg.time_limit_minutes * 60
    out = output_path(cfg)
    out.mkdir(parents=True, exist_ok=True)
    print("effective config:\n" + json.dumps(dataclasses.asdict(cfg), indent=2), flush=True)
    write_json(out / "config.json", {**dataclasses.asdict(cfg), "config_hash": config_hash(cfg)})
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # pooler / unused-weight notices are expected with a frozen encoder
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft on transformers 5
    predict_only = bool(cfg.adapter_from)
    if not predict_only:  # the budget is checked before any data or weights are loaded
        breakdown = param_breakdown(cfg)
        print(format_breakdown(breakdown, cfg.param_budget), flush=True)
        check_budget(cfg, breakdown)

    scratch = tempfile.TemporaryDirectory(prefix="agnews_smoke_")
    train_source, test_source = cfg.train_data, cfg.test_data
    if cfg.smoke:
        train_csv, test_pkl = make_smoke_inputs(Path(scratch.name), cfg.seed)
        train_source = str(train_csv) if train_source == "auto" else train_source
        test_source = str(test_pkl) if test_source == "auto" else test_source
    test_path = resolve_test_path(test_source)
    test_texts = [clean_text(t) for t in load_test_texts(test_path)]

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    world = 1 if predict_only else process_count(cfg)
    model = None
    if predict_only:
        model, tokenizer, trained_cfg, temperature = load_adapter(cfg, Path(cfg.adapter_from))
        breakdown = param_breakdown(trained_cfg)
        cfg_for_data = trained_cfg
    else:
        cfg_for_data = cfg
    frame = load_train_frame(cfg, train_source)
    if cfg.max_train_samples and cfg.max_train_samples < len(frame):
        frame = frame.sample(n=cfg.max_train_samples, random_state=cfg.seed).reset_index(drop=True)
    frame["text"] = [clean_text(t) for t in frame["text"]]
    labels = frame["label"].to_numpy(dtype=np.int64)
    train_rows, val_rows = stratified_split(labels, cfg.val_fraction, cfg.seed)

    encoder_source = cfg.model
    if not predict_only:
        if cfg.smoke:
            tokenizer = smoke_tokenizer(list(frame["text"]) + test_texts)
            from transformers import AutoModel

            torch.manual_seed(cfg.seed)
            base = AutoModel.from_config(encoder_config(cfg, len(tokenizer)))
            encoder_source = os.path.join(scratch.name, "base")
            base.save_pretrained(encoder_source)
            tokenizer.save_pretrained(encoder_source)
        else:
            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    texts = list(frame["text"])
    train_ids = encode_texts(tokenizer, [texts[i] for i in train_rows], cfg_for_data.max_length)
    epoch_ids = [train_ids]
    if cfg.augment > 0 and not predict_only:
        rng = random.Random(cfg.seed)
        epoch_ids = []
        for _ in range(cfg.epochs):
            noisy = {i: augment_text(texts[r], rng) for i, r in enumerate(train_rows) if rng.random() < cfg.augment}
            fresh = dict(zip(noisy, encode_texts(tokenizer, list(noisy.values()), cfg.max_length))) if noisy else {}
            epoch_ids.append([fresh.get(i, ids) for i, ids in enumerate(train_ids)])
    # prediction length is a post-processing choice: a predict-only run's own setting wins
    predict_length = cfg.predict_max_length or cfg_for_data.predict_max_length or cfg_for_data.max_length
    data = TrainData(epoch_ids=epoch_ids, labels=labels[train_rows],
                     val_ids=encode_texts(tokenizer, [texts[i] for i in val_rows], predict_length),
                     val_labels=labels[val_rows], pad_id=tokenizer.pad_token_id, encoder_source=encoder_source)
    test_ids = encode_texts(tokenizer, test_texts, predict_length)

    steps = (len(train_rows) // (cfg.batch_size * world) + 1) * cfg.epochs
    print(f"\n{'=' * 72}\n  train rows {len(train_rows):,} | validation rows {len(val_rows):,} | test rows "
          f"{len(test_texts):,}\n  batch {cfg.batch_size} x {world} process(es) | ~{steps:,} steps over "
          f"{cfg.epochs} epoch(s) | device {describe_device(device, world)}\n  precision "
          f"{autocast_dtype(device, cfg.precision) or 'fp32'} | trainable parameters {breakdown['total']:,}"
          f"{' | predict only: ' + cfg.adapter_from if predict_only else ''}", flush=True)
    for i in range(min(3, len(train_ids))):
        print(f"  sample [{LABELS[data.labels[i]]}] {tokenizer.decode(train_ids[i], skip_special_tokens=True)[:110]}")
    print("=" * 72, flush=True)

    dtype = autocast_dtype(device, cfg.precision)
    result = {"history": [], "train_seconds": 0.0, "samples": 0, "tokens": 0, "stopped_early": False}
    if not predict_only:
        if world == 1:
            model = load_model(cfg, encoder_source).to(device)
        result = train(cfg, data, model, device, deadline)
        if model is None:
            model = load_model(cfg, encoder_source)
        model = model.to(device)
        load_trainable_state(model, result["state"])
    model = model.to(device)

    val_logits = predict_logits(model, data.val_ids, cfg.eval_batch_size, data.pad_id, device, dtype, "validate")
    if not predict_only:
        temperature = fit_temperature(val_logits, data.val_labels)
    train_prior = np.bincount(data.labels, minlength=len(LABELS)) / len(data.labels)
    pseudo_counts = []
    t_predict = time.perf_counter()
    test_logits = predict_logits(model, test_ids, cfg.eval_batch_size, data.pad_id, device, dtype, "test")
    predict_seconds = time.perf_counter() - t_predict
    for round_ in range(0 if predict_only else cfg.pseudo_label_rounds):
        probs, _ = corrected_probabilities(test_logits, temperature, cfg.prior_correction, train_prior)
        keep = np.flatnonzero(probs.max(axis=1) >= cfg.pseudo_label_threshold)
        pseudo_counts.append(int(len(keep)))
        print(f"pseudo-label round {round_ + 1}: {len(keep):,} confident test rows join the training rows")
        if not len(keep):
            break
        round_data = dataclasses.replace(
            data, epoch_ids=[train_ids + [test_ids[i] for i in keep]],
            labels=np.concatenate([data.labels, probs[keep].argmax(axis=1)]))
        extra = train(cfg, round_data, model, device, deadline, epochs=1)
        load_trainable_state(model.to(device), extra["state"])
        result["history"] += [{**h, "epoch": len(result["history"]) + 1, "pseudo_round": round_ + 1}
                              for h in extra["history"]]
        result["train_seconds"] += extra["train_seconds"]
        val_logits = predict_logits(model, data.val_ids, cfg.eval_batch_size, data.pad_id, device, dtype)
        temperature = fit_temperature(val_logits, data.val_labels)
        test_logits = predict_logits(model, test_ids, cfg.eval_batch_size, data.pad_id, device, dtype, "test")

    probs, test_prior = corrected_probabilities(test_logits, temperature, cfg.prior_correction, train_prior)
    predictions = probs.argmax(axis=1)
    val_pred = val_logits.argmax(axis=1)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(confusion, (data.val_labels, val_pred), 1)

    if predict_only:  # the adapter is the one predicted with: carry it along unchanged
        shutil.copytree(cfg.adapter_from, out / "adapter", dirs_exist_ok=True)
    else:
        save_adapter(model, cfg, out / "adapter", temperature, encoder_source)
    atomic_write(out / "probabilities.csv", lambda tmp: pd.DataFrame(
        {"ID": np.arange(len(probs)), **{f"p_{i}": probs[:, i].round(6) for i in range(len(LABELS))}}
    ).to_csv(tmp, index=False))
    # Raw logits let post-processing be compared without retraining (bench/accuracy.py reads them).
    atomic_write(out / "logits.npz", lambda tmp: np.savez_compressed(
        open(tmp, "wb"), val_logits=val_logits, val_labels=data.val_labels, test_logits=test_logits,
        train_prior=train_prior, temperature=temperature))
    write_submission(out / "submission.csv", predictions)
    plots = save_plots(out, result["history"], confusion) if result["history"] else []

    seconds = max(result["train_seconds"], 1e-9)
    metrics = {
        "config_hash": config_hash(cfg),
        "trainable_params": breakdown["total"],
        "param_breakdown": breakdown,
        "val_accuracy": float((val_pred == data.val_labels).mean()),
        "val_rows": int(len(val_rows)),
        "per_class_val_accuracy": {LABELS[i]: float(confusion[i, i] / max(1, confusion[i].sum()))
                                   for i in range(len(LABELS))},
        "history": result["history"],
        "best_epoch": max(result["history"], key=lambda h: h["val_accuracy"])["epoch"] if result["history"] else None,
        "stopped_early": result["stopped_early"],
        "train_rows": int(len(train_rows)),
        "train_seconds": round(result["train_seconds"], 2),
        "train_samples_per_second": round(result["samples"] / seconds, 2),
        "tokens_per_second": round(result["tokens"] / seconds, 1),
        "predict_seconds": round(predict_seconds, 2),
        "total_seconds": round(time.monotonic() - t0, 2),
        "test_rows": len(test_texts),
        "test_label_distribution": {LABELS[i]: int((predictions == i).sum()) for i in range(len(LABELS))},
        "temperature": temperature,
        "test_prior_estimate": None if test_prior is None else [round(float(p), 5) for p in test_prior],
        "pseudo_label_rows": pseudo_counts,
        "predict_only": predict_only,
        "device": describe_device(device, world),
        "processes": world,
        "precision": str(dtype or "fp32").replace("torch.", ""),
        "versions": library_versions(),
        "plots": plots,
        "config": dataclasses.asdict(cfg),
    }
    write_json(out / "metrics.json", metrics)
    scratch.cleanup()
    print(f"\nval_accuracy {metrics['val_accuracy']:.4f} | train {metrics['train_seconds']:.0f}s "
          f"({metrics['train_samples_per_second']:.0f} rows/s) | predict {predict_seconds:.1f}s\n"
          f"test label distribution {metrics['test_label_distribution']}\nwrote {out / 'submission.csv'} "
          f"({len(predictions)} rows, validated)", flush=True)
    return metrics


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"config keys: {', '.join(CONFIG_KEYS)}")
    parser.add_argument("--config", metavar="FILE.json", help="a JSON object of config overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable; booleans are true/false)")
    # Kaggle and Jupyter may pass their own arguments to a script: ignore what is not ours.
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(resolve_config(args.config, args.sets))
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
