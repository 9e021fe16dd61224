#!/usr/bin/env python3
"""LoRA fine-tuning of a frozen encoder on AG News, under a trainable-parameter budget.

One self-contained Kaggle script (competition `deep-learning-spring-2025-project-2`): it cleans the text,
counts the trainable parameters exactly before anything is loaded, trains LoRA adapters plus a small head
with a plain PyTorch loop (dynamic padding, AMP, data parallel over every visible GPU), predicts the
competition's `test_unlabelled.pkl` and writes `submission.csv`, `probabilities.csv`, `metrics.json`,
`config.json`, `logits.npz`, `adapter/` and plots into the output folder.

    python agnews_lora.py                                   # on Kaggle: every default
    python agnews_lora.py --set smoke=true                  # offline: tiny model, synthetic data, CPU, ~30 s
    python agnews_lora.py --set test_data=test_unlabelled.pkl --set train_data=train.csv   # anywhere else
    python agnews_lora.py --config run.json --set lr=3e-4   # overrides: block < --config < --set

Only this file is uploaded to Kaggle, so it imports nothing local. `lorakit` (src/) loads it as the module
`agnews_lora` for the config, the parameter count and the submission checks (PUBLIC_API lists what it uses).
Before training it checks what would otherwise fail after it: the config, the count, the inputs, the model and
tokenizer, the output folder (writable, with room for the outputs) and the largest prediction batch. The output
folder is untouched until training finished; then the best adapter is saved there first (`adapter/`), so a
failure while predicting still leaves it (`--set adapter_from=DIR/adapter`, or `lorakit push --predict-from N`);
the other outputs are staged and published after, submission.csv first.
Exit status: 0 done; 2 bad config, input or data; 3 over the parameter budget; 4 training or prediction went
non-finite (no submission written; the adapter is kept when training had finished); 5 trained, but not every
output was published (the message names what is missing and where the adapter is kept); 128 + N stopped by
signal N (130 SIGINT, 143 SIGTERM: outputs written from the best epoch when one had finished).

Reading order: the overrides block and `Config` (every knob: type, default, help, allowed values), then `run()`,
the whole job one phase per line; then the learning in the order it happens: data (cleaning, the validation
split), the model (encoder, LoRA, head, the exact budget), batching, training (run -> train_model -> train ->
train_step), prediction and calibration, outputs. An appendix after it holds the guards and the plumbing: errors, config rules, input discovery, the
checks before training, publishing and keeping the adapter, smoke mode, the stop signal, the hardened test-file
reader, what lorakit reads (the overrides and push record blocks, PUBLIC_API, BENCH_API) and `main`. The push
record block below the overrides holds what `lorakit push` recorded (message, git commit, push time,
accelerator asked); metrics.json copies it.

Libraries do what they already do well (PEFT's LoRA; transformers' models, tokenizers and learning-rate schedule;
pyarrow's validation); the training step (autocast, GradScaler, clipping) and data parallel (mp.spawn, DDP) stay
hand-written, since accelerate's Accelerator holds one mixed precision per process (lorakit, the tests and the
benches run the kernel many times in one) and its launcher forks, which CUDA forbids once prediction's batch
size has been tried on the GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import faulthandler
import functools
import gc
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
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
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
# What `lorakit push` recorded of this version (its message, git commit, push time, the accelerator asked) as a
# JSON object between these markers of the pushed copy. It is no config (config_hash never sees it): the run
# copies it into metrics.json as `push`, and `lorakit sync` reads it back from the version's source.
PUSH_RECORD_BEGIN = "# >>> lorakit push record >>>"
PUSH_RECORD_END = "# <<< lorakit push record <<<"
# >>> lorakit push record >>>
PUSH_RECORD_JSON = r"""
{}
"""
# <<< lorakit push record <<<

LABELS = ("World", "Sports", "Business", "Sci/Tech")  # label k is LABELS[k]; lorakit reads this line as a literal
COMPETITION = "deep-learning-spring-2025-project-2"
COMPETITION_PARAM_LIMIT = 1_000_000  # the competition's rule: at most this many trainable parameters
TEST_FILE_NAME = "test_unlabelled.pkl"
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
AG_NEWS_COLUMNS = ("Class Index", "Title", "Description")
AG_NEWS_DATASET = "amananandrai/ag-news-classification-dataset"  # AG News as CSVs, for runs with internet off
SYNC_STEPS = 25  # training steps between host syncs: time limit, stop signal, non-finite checks, progress
LOSS_CURVE_POINTS = 20_000  # at most this many points of metrics.json's loss_curve (one per sync point)
PROGRESS_ENV = "AGNEWS_PROGRESS_SECONDS"  # an alias of the config key progress_seconds (a key beats it)


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Knob:
    """What one config key allows, declared on its field (`knob`): its help, with the unit, and its rule. Numbers
    lie in [low, high] (an end None is unbounded, an open end excluded); with `least_nonzero`, a number is 0
    (meaning `zero`) or at least that; strings are one of `choices`, or match `pattern` (else they must `rule`);
    `within_positions`: at most the encoder's usable positions. `group` heads the docs' table it opens."""

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    least_nonzero: float | None = None
    zero: str = ""
    choices: tuple = ()
    pattern: str = ""
    rule: str = ""
    within_positions: bool = False
    group: str = ""

    @property
    def bounds(self) -> tuple:
        """(low, low included, high, high included), as interval_text takes them."""
        return self.low, not self.low_open, self.high, self.high is not None and not self.high_open

    def admits(self, value: float) -> bool:
        return (self.low is None or (value > self.low if self.low_open else value >= self.low)) and (
            self.high is None or (value < self.high if self.high_open else value <= self.high))


def knob(default, help: str, **rules):
    """A Config field declared once: its default, its help (with the unit) and its rule (Knob's fields)."""
    return field(default=default, metadata={"knob": Knob(help, **rules)})


NOT_EMPTY = {"pattern": r"(?s).*\S.*", "rule": "not be empty"}


@dataclass(frozen=True)
class Config:
    """Every knob of a run. Overrides apply in order: the OVERRIDES_JSON block, --config FILE, --set key=value."""

    model: str = knob("roberta-base", "hub id or a local folder with pretrained weights (e.g. under /kaggle/input)",
                      group="data", **NOT_EMPTY)
    train_data: str = knob("auto", "auto: the AG News train.csv under /kaggle/input, else hf:ag_news | a CSV path | "
                                   "hf:ag_news", **NOT_EMPTY)
    test_data: str = knob("auto", "auto: the competition's test_unlabelled.pkl under /kaggle/input | a pickle path",
                          **NOT_EMPTY)
    output_dir: str = knob("auto", "auto: /kaggle/working on Kaggle, ./outputs elsewhere", **NOT_EMPTY)
    max_train_samples: int = knob(0, "training rows used before the split; 0 = all", low=0)
    val_fraction: float = knob(0.05, "stratified held-out share of the training rows", low=0, low_open=True, high=0.5)
    lora_r: int = knob(16, "LoRA rank", low=1, group="LoRA and head")
    lora_alpha: float = knob(32.0, "LoRA scaling numerator (scale = alpha / r)", low=0, low_open=True)
    lora_dropout: float = knob(0.1, "dropout probability on the LoRA input", low=0, high=1, high_open=True)
    lora_targets: str = knob("query,value", "comma-separated: query,key,value,dense or exact in-layer names",
                             pattern=r"(?s).*[^\s,].*", rule="name at least one module")
    lora_layers: str = knob("all", "all | top:K (the last K encoder layers)", pattern=r"all|top:[1-9]\d*",
                            rule="be 'all' or 'top:K' with K >= 1")
    head: str = knob("linear", "linear: dropout + Linear(hidden, 4) | roberta: the default 2-layer head",
                     choices=("linear", "roberta"))
    head_dropout: float = knob(0.1, "dropout probability before the head", low=0, high=1, high_open=True)
    epochs: int = knob(3, "passes over the training rows", low=1, group="optimisation")
    # below 1e-6 nothing is learnt: a "valid" submission of one class
    lr: float = knob(5e-4, "peak AdamW learning rate", low=1e-6, high=1)
    batch_size: int = knob(32, "rows per step and process", low=1)
    max_length: int = knob(128, "training truncation in tokens (with <s> and </s>)", low=8, within_positions=True)
    predict_max_length: int = knob(256, "prediction truncation in tokens (generated test rows are long); "
                                        "0 = max_length", low=0, least_nonzero=8, zero="= max_length",
                                   within_positions=True)
    weight_decay: float = knob(0.01, "AdamW decoupled weight decay", low=0, high=1)
    warmup_ratio: float = knob(0.06, "share of steps with a linear warm-up, then linear decay to 0", low=0, high=1,
                               high_open=True)
    # a tiny clip norm underflows every gradient: nothing is learnt
    grad_clip: float = knob(1.0, "max global gradient norm; 0 = off", low=0, least_nonzero=0.01, zero="off")
    precision: str = knob("auto", "auto: bf16 if supported, else fp16 on GPU; fp32 on CPU",
                          choices=("auto", "fp32", "fp16", "bf16"))
    processes: int = knob(0, "data-parallel processes; 0 = one per visible GPU (1 on CPU)", low=0)
    # larger batches only risk memory; an out-of-memory error halves it
    eval_batch_size: int = knob(128, "rows per prediction batch", low=1, high=1024)
    seed: int = knob(42, "seeds the split, batching, init and noise", low=0, high=2**32, high_open=True)
    augment: float = knob(0.0, "probability per row and epoch of cheap noise (case, truncation, typos)", low=0,
                          high=1)
    prior_correction: str = knob("none", "none | em | em_uniform: EM re-estimate of the test label prior",
                                 choices=("none", "em", "em_uniform"), group="prediction")
    pseudo_label_rounds: int = knob(0, "rounds of training on train + confident test rows", low=0)
    pseudo_label_threshold: float = knob(0.95, "min probability for a test row to become a pseudo-label", low=0,
                                         low_open=True, high=1)
    adapter_from: str = knob("", "path to a previous run's adapter/: predict only, no training")
    adapter_sha256: str = knob("", "when set, adapter_from must hold exactly this adapter (adapter_digest)",
                               pattern=r"|[0-9a-f]{64}", rule="be 64 lowercase hex digits (or empty)")
    param_budget: int = knob(COMPETITION_PARAM_LIMIT, "max trainable parameters, head included", low=1,
                             group="guards")
    time_limit_minutes: float = knob(660.0, "minutes of training, which then stops cleanly, leaving time to predict",
                                     low=0, low_open=True)
    progress_seconds: float = knob(60.0, f"seconds between plain progress lines when stderr is no terminal (a "
                                         f"tqdm bar there); also set by the environment variable {PROGRESS_ENV}",
                                   low=0)
    smoke: bool = knob(False, "offline: tiny random encoder, synthetic data, CPU-sized (see smoke_setup)")

    @property
    def predict_length(self) -> int:
        """Prediction truncation in tokens: predict_max_length, 0 meaning max_length."""
        return self.predict_max_length or self.max_length

    @property
    def known_arch(self) -> dict | None:
        """The encoder's architecture when it is known without a download (a smoke run's tiny RoBERTa, or
        roberta-base's); None for any other model, whose own config.json tells."""
        if self.smoke:
            return SMOKE_ARCH
        return ROBERTA_BASE_ARCH if self.model == "roberta-base" else None


CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Config))
KNOBS = {f.name: f.metadata["knob"] for f in dataclasses.fields(Config)}  # what validation and docs read
HASH_EXCLUDED = ("output_dir", "train_data", "test_data", "progress_seconds")  # where, not what: not hashed
HEADS = KNOBS["head"].choices  # lorakit's planner reads them


# ---------------------------------------------------------------------------------------------- the job
def run(cfg: Config) -> dict:
    """The whole job, one phase per line; returns the metrics. What would fail after training is checked before
    it. The output folder is untouched until training finished (or a signal stopped it after an epoch); then the
    adapter is saved there first, and the other outputs are staged and published, submission.csv first."""
    started = time.monotonic()
    announce(cfg)
    device = accelerator()
    cfg = locate_adapter(cfg)
    trained = model_config(cfg)  # the parameter budget, checked before anything loads
    out = output_path(cfg)
    with tempfile.TemporaryDirectory(prefix="agnews_lora_") as tmp, StopSignal(Path(tmp) / "stop").installed() as stop:
        ctx = RunContext(cfg, device, started, started + cfg.time_limit_minutes * 60, stop, Path(tmp),
                         world=process_count(cfg))
        seed_everything(cfg.seed)
        inputs = resolve_inputs(smoke_setup(cfg, ctx.scratch), ctx.scratch)
        data = load_data(trained, inputs)
        model = load_adapter_model(cfg, trained) if cfg.adapter_from else new_model(cfg, inputs)
        encoded = encode_for_prediction(cfg, model, data)
        check_output_folder(out, ctx.scratch, outputs_size(cfg, data, model))
        check_prediction_batch(ctx, model, encoded)
        check_training_batches(ctx, data, model)
        print_banner(ctx, inputs, data, model)
        training = train_model(ctx, model, data, encoded)
        adapter = None
        try:
            adapter = None if model.trained else keep_adapter(model, ctx.scratch, out)
            prediction = predict(ctx, model, data, encoded)
            metrics = write_outputs(ctx, inputs, data, model, training, prediction)
            publish(ctx.scratch / "outputs", out, adapter_kept=adapter is not None)
        except PublishError:
            raise
        except (KernelError, OSError) as exc:
            raise failed_after_training(exc, adapter) from None
    print_summary(metrics, out, inputs)
    return metrics


@dataclass(frozen=True)
class RunContext:
    """What every phase needs, in one object. Picklable: data-parallel ranks receive it through mp.spawn (the
    monotonic clock is system-wide, so `started` and `deadline` hold in every rank)."""

    cfg: Config
    device: torch.device
    started: float  # time.monotonic() when the run started
    deadline: float  # time.monotonic() after which training stops at its next sync point
    stop: StopSignal
    scratch: Path  # the run's own temporary folder: staged outputs, a smoke run's generated inputs
    rank: int = 0  # this process's data-parallel rank
    world: int = 1  # data-parallel processes that train

    @property
    def dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.device, self.cfg.precision)


@dataclass(frozen=True)
class Inputs:
    """What the run reads. Files in `scratch`, the run's own temporary folder, were generated for it (smoke_setup)."""

    model: str  # where the encoder and its tokenizer load from: a hub id or a folder
    train: str  # a CSV in the AG News layout, or hf:ag_news
    test: Path
    test_kind: str  # smoke (any smoke run: a tiny random encoder) | competition (the file at its mount path) | other
    test_sha256: str
    scratch: Path

    @property
    def generated_encoder(self) -> bool:
        return Path(self.model).parent == self.scratch

    def predicted_on(self, rows: int) -> dict:
        """What the predictions are of, for metrics.json (lorakit submits only kind "competition")."""
        return {"kind": self.test_kind, "path": str(self.test), "sha256": self.test_sha256, "rows": int(rows)}

    def describe(self) -> str:
        if self.test_kind == "smoke":
            synthetic = self.test.parent == self.scratch
            return SMOKE_NOTICE if synthetic else SMOKE_NOTICE.replace("synthetic data", f"test data {self.test}")
        where = "the competition's test file" if self.test_kind == "competition" else "NOT the competition's file"
        return f"predicting on {self.test} ({where}, sha256 {self.test_sha256[:12]})"


@dataclass
class Data:
    """Every row the run reads, cleaned; validation rows are a stratified slice of the training data."""

    texts: list[str]
    labels: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    test_texts: list[str]
    source_rows: np.ndarray  # each row's index in the training source (kept through max_train_samples)

    @property
    def val_labels(self) -> np.ndarray:
        return self.labels[self.val_rows]

    @property
    def val_ids(self) -> np.ndarray:
        """The validation rows' indices in the training source: two runs' validation predictions pair by them."""
        return np.asarray(self.source_rows[self.val_rows], dtype=np.int64)

    @property
    def val_ids_sha256(self) -> str:
        """A digest of the validation slice (ids and labels): equal digests, the same rows to compare on."""
        return hashlib.sha256(self.val_ids.tobytes() + self.val_labels.astype(np.int64).tobytes()).hexdigest()

    @property
    def train_prior(self) -> np.ndarray:
        return np.bincount(self.labels[self.train_rows], minlength=len(LABELS)) / len(self.train_rows)


@dataclass
class Model:
    net: Classifier
    tokenizer: object
    config: Config  # what the model is trained with: this run's config, or a loaded adapter's own
    source: str  # where its encoder weights load from (every data-parallel rank loads them)
    breakdown: dict
    temperature: float | None = None  # a loaded adapter's calibration; None until a new model is fitted
    trained: bool = False  # loaded from an adapter: nothing to train
    generated: bool = False  # its encoder was generated for this run (a smoke run's): the adapter keeps a copy


@dataclass
class Encoded:
    val_ids: list
    test_ids: list
    pad_id: int
    length: int  # prediction truncation, in tokens
    batch_size: int  # rows per prediction batch: eval_batch_size, or less when that did not fit in memory


@dataclass
class Training:
    history: list = field(default_factory=list)
    loss_curve: list = field(default_factory=list)  # {step, epoch, loss}: the mean loss since the previous point
    steps: int = 0  # optimizer steps, every round together
    seconds: float = 0.0
    samples: int = 0
    tokens: int = 0
    stopped_early: bool = False  # the time limit cut it short
    pseudo_label_rows: list = field(default_factory=list)

    def add(self, result: dict, **extra) -> None:
        """One call of train()'s result, its epochs and steps counted on from the earlier rounds'."""
        points = [{**p, "step": p["step"] + self.steps, "epoch": round(p["epoch"] + len(self.history), 4)}
                  for p in result["loss_curve"]]
        self.loss_curve += points[:LOSS_CURVE_POINTS - len(self.loss_curve)]
        self.steps += result["steps"]
        self.history += [{**h, "epoch": len(self.history) + i + 1, **extra} for i, h in enumerate(result["history"])]
        self.seconds += result["train_seconds"]
        self.samples += result["samples"]
        self.tokens += result["tokens"]
        self.stopped_early = self.stopped_early or result["stopped_early"]


@dataclass
class Prediction:
    val_logits: np.ndarray
    test_logits: np.ndarray
    temperature: float
    probs: np.ndarray
    test_prior: np.ndarray | None
    seconds: float

    @property
    def labels(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


# ======================================================================================================
# The learning, in the order it happens: data, model, batching, training, prediction, outputs.
# ======================================================================================================
# -------------------------------------------------------------- data: cleaning and the validation split
def load_data(cfg: Config, inputs: Inputs) -> Data:
    """The training rows (sampled, cleaned, every class present at least twice, split) and the test texts."""
    frame = load_train_frame(inputs.train)
    if cfg.max_train_samples and cfg.max_train_samples < len(frame):
        frame = frame.sample(n=cfg.max_train_samples, random_state=cfg.seed)
    source_rows = frame.index.to_numpy(dtype=np.int64)  # kept through the sampling: the rows' ids in the source
    frame = frame.reset_index(drop=True)
    labels = frame["label"].to_numpy(dtype=np.int64)
    counts = np.bincount(labels, minlength=len(LABELS))
    if (counts < 2).any():
        short = ", ".join(f"{LABELS[i]} ({counts[i]})" for i in np.flatnonzero(counts < 2))
        sampled = f" among the {cfg.max_train_samples} rows of max_train_samples" if cfg.max_train_samples else ""
        raise DataError(f"every class needs at least 2 training rows (one to train on, one to validate), but "
                        f"{inputs.train} has too few of: {short}{sampled}")
    train_rows, val_rows = stratified_split(labels, cfg.val_fraction, cfg.seed)
    test_texts = clean_texts(load_test_texts(inputs.test), "test")
    return Data(clean_texts(frame["text"], "training"), labels, train_rows, val_rows, test_texts, source_rows)


def load_train_frame(source: str) -> pd.DataFrame:
    """Training rows as text + label (0-3), from a CSV in the AG News layout or the HF dataset."""
    if source != "hf:ag_news":
        return read_ag_news_csv(Path(source))
    try:
        from datasets import load_dataset

        split = load_dataset("ag_news", split="train")
    except Exception as exc:  # offline, hub errors, a missing package: one advice for all
        raise DataError(f"cannot load ag_news from the Hugging Face hub ({type(exc).__name__}); pass --set "
                        f"train_data=PATH/train.csv (kaggle datasets download {AG_NEWS_DATASET})") from None
    return pd.DataFrame({"text": list(split["text"]), "label": list(split["label"])})


def read_ag_news_csv(path: Path) -> pd.DataFrame:
    try:
        broken = invalid_utf8_lines(path)
        frame = pd.read_csv(path, encoding_errors="replace")  # arrow-backed strings cannot hold invalid text
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read training CSV {path}: {exc}") from None
    if broken:
        print(f"warning: {broken:,} line(s) of {path} were not valid UTF-8; the invalid bytes became U+FFFD",
              file=sys.stderr, flush=True)
    missing = [c for c in AG_NEWS_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected {','.join(AG_NEWS_COLUMNS)}")
    labels = pd.to_numeric(frame["Class Index"], errors="coerce") - 1
    if frame.empty or labels.isna().any() or not labels.isin(range(len(LABELS))).all():
        raise DataError(f"{path}: 'Class Index' must hold 1-4 on every row (and the file must have rows)")
    text = frame["Title"].fillna("").astype(str) + " " + frame["Description"].fillna("").astype(str)
    return pd.DataFrame({"text": text, "label": labels.astype(int)})


def invalid_utf8_lines(path: Path) -> int:
    text = Path(path).read_bytes().decode("utf-8", "surrogateescape")  # each invalid byte: a lone surrogate
    return sum(1 for line in text.splitlines() if _SURROGATE.search(line)) if _SURROGATE.search(text) else 0


_AG_CODE = re.compile(r"( ?)#(\d{2,5});")  # AG News writes "doesn #39;t" for "doesn&#39;t", "#36;" for "$"
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]{0,200})?/?>")  # real tags only: tickers like <TXN.N> stay
_URL = re.compile(r"(?:https?://|www\.)([^\s/]+)\S*")
_SURROGATE = re.compile("[\ud800-\udfff]")  # not valid Unicode: tokenizers and printing fail on it


def clean_text(text: str) -> str:
    """One cleaning for every split: invalid Unicode (lone surrogates) to U+FFFD, HTML codes and entities,
    tags, backslashes, URLs, whitespace.

    It keeps parenthesised passages and non-ASCII text: the generated half of the test file is full of both.
    """
    text = _SURROGATE.sub("\ufffd", str(text))
    text = _AG_CODE.sub(lambda m: ("" if m.group(2) == "39" else m.group(1)) + f"&#{m.group(2)};", text)
    for _ in range(2):  # AG News double-escapes some entities (&amp;lt;b&amp;gt;)
        text = html.unescape(text)
    text = _TAG.sub(" ", text)
    text = _URL.sub(lambda m: " " + m.group(1).removeprefix("www.") + " ", text)
    text = text.replace("\\", " ")
    return " ".join(text.split())


def clean_texts(texts, what: str) -> list[str]:
    """clean_text over one split's rows, saying how many were not valid Unicode (repaired, never fatal)."""
    texts = [str(t) for t in texts]
    broken = sum(1 for t in texts if _SURROGATE.search(t))
    if broken:
        print(f"warning: {broken:,} {what} row(s) were not valid Unicode; the invalid characters became U+FFFD",
              file=sys.stderr, flush=True)
    return [clean_text(t) for t in texts]


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


def augmented_epochs(cfg: Config, tokenizer, data: Data, train_ids: list) -> list:
    """Token ids per epoch: the same ids every epoch, or with `augment` a fresh noisy share of rows in each."""
    if cfg.augment <= 0:
        return [train_ids]
    rng = random.Random(cfg.seed)
    epochs = []
    for _ in range(cfg.epochs):
        noisy = {i: augment_text(data.texts[r], rng) for i, r in enumerate(data.train_rows)
                 if rng.random() < cfg.augment}
        fresh = dict(zip(noisy, encode_texts(tokenizer, list(noisy.values()), cfg.max_length))) if noisy else {}
        epochs.append([fresh.get(i, ids) for i, ids in enumerate(train_ids)])
    return epochs


# ------------------------------------------------------ model: encoder, LoRA, head and the exact budget
def new_model(cfg: Config, inputs: Inputs) -> Model:
    """A fresh LoRA model on the encoder the inputs name (pretrained, or a smoke run's tiny random one)."""
    tokenizer = load_tokenizer(inputs.model)
    torch.manual_seed(cfg.seed)
    net = build_model(cfg, inputs.model)
    return Model(net, tokenizer, cfg, inputs.model, breakdown_of(net), generated=inputs.generated_encoder)


def build_model(cfg: Config, source=None, adapter: Path | None = None) -> Classifier:
    """The one way to make the classifier: the frozen encoder (pretrained weights when `source` is a hub id
    or a folder; random weights from `source` when it is a transformers config, or from the run's own
    architecture when None, as for meta-device counts), then LoRA and the head, new or loaded from `adapter`."""
    from transformers import AutoModel

    if isinstance(source, (str, os.PathLike)):
        encoder = from_pretrained(AutoModel, str(source))
    else:
        encoder = AutoModel.from_config(source if source is not None else encoder_config(cfg))
    encoder.requires_grad_(False)
    head = build_head(cfg.head, encoder.config.hidden_size, cfg.head_dropout)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft on transformers 5
        if adapter is None:
            return Classifier(attach_lora(encoder, cfg), head)
        load_head(head, adapter / "head.pt")
        return Classifier(load_lora(encoder, adapter), head)


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


def encoder_config(cfg: Config, vocab_size: int | None = None):
    """The transformers config of the encoder the run uses, without downloading weights (`vocab_size`: a smoke
    encoder's, its tokenizer's size)."""
    from transformers import RobertaConfig

    arch = cfg.known_arch
    if arch is None:
        return pretrained_config(cfg.model)
    values = {key: value for key, value in arch.items() if key != "model_type"}
    return RobertaConfig(**{**values, **({"vocab_size": vocab_size} if vocab_size else {})})


def pretrained_config(source: str):
    """The transformers config in a model folder or hub repository."""
    from transformers import AutoConfig

    return from_pretrained(AutoConfig, source)


def from_pretrained(kind, source: str):
    """``kind.from_pretrained(source)``, with model_missing's one line when the encoder cannot be loaded."""
    try:
        return kind.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise model_missing(source, exc) from None


def model_missing(model: str, exc: Exception) -> ConfigError:
    """The one error for an encoder that cannot be loaded: offline, a wrong path, a hub id that is not there."""
    where = ("; attach a copy (model_sources or dataset_sources in kernel-metadata.json) and point --set model= "
             "at its folder, e.g. /kaggle/input/roberta-base/transformers/default/1" if on_kaggle() else
             "; pass --set model=FOLDER, a local copy with config.json, the weights and the tokenizer files")
    return ConfigError(f"cannot load model {model}: it is neither a folder with a config.json nor reachable on the "
                       f"Hugging Face hub (internet off?) ({type(exc).__name__}){where}")


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, source)


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


# Layers whose forward first_token_layer reproduces (same submodules, plain softmax attention, on transformers 5).
FIRST_TOKEN_LAYERS = ("BertLayer", "RobertaLayer", "XLMRobertaLayer")


def first_token_layer(layer: nn.Module, batch: dict, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """`layer`'s forward for the first token only: its query, attention output and FFN (keys and values still
    span every token, masked by `batch["mask"]`, the 2-D mask of the Classifier's forward). Returns (rows, 1,
    hidden). Outside a Classifier forward (no mask) the layer runs whole, as its class defines it."""
    if batch["mask"] is None:
        return type(layer).forward(layer, hidden_states, *args, **kwargs)
    attn = layer.attention.self
    rows = hidden_states.shape[0]

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(rows, x.shape[1], -1, attn.attention_head_size).transpose(1, 2)

    first = hidden_states[:, :1]
    context = F.scaled_dot_product_attention(
        heads(attn.query(first)), heads(attn.key(hidden_states)), heads(attn.value(hidden_states)),
        attn_mask=batch["mask"][:, None, None, :].bool(), dropout_p=attn.dropout.p if attn.training else 0.0,
        scale=attn.scaling)
    attended = layer.attention.output(context.transpose(1, 2).reshape(rows, 1, -1), first)
    return layer.output(layer.intermediate(attended), attended)


class Classifier(nn.Module):
    """A (LoRA-wrapped) encoder and a head on the first token's final hidden state.

    The head reads only the first token, so the encoder's last layer computes only that token (first_token_layer):
    same logits and gradients, 6.9% fewer FLOPs on roberta-base (bench/RESULTS.md). It is an instance attribute
    `forward`, not a wrapper module, so parameter names and saved adapters stay as they were."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self._batch = {"mask": None}  # the attention mask of the forward under way, for first_token_layer
        base = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if layers and type(layers[-1]).__name__ in FIRST_TOKEN_LAYERS and not base.config.is_decoder:
            layers[-1].forward = functools.partial(first_token_layer, layers[-1], self._batch)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self._batch["mask"] = attention_mask
        try:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            self._batch["mask"] = None
        return self.head(hidden[:, 0])


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
        return breakdown_of(build_model(cfg))


def format_breakdown(breakdown: dict, budget: int) -> str:
    rows = [f"  lora {name:<28} {n:>10,}" for name, n in breakdown["lora"].items()]
    rows += [f"  {'head':<33} {breakdown['head']:>10,}", f"  {'other':<33} {breakdown['other']:>10,}"]
    verdict = "within" if breakdown["total"] <= budget else "OVER"
    rows.append(f"  {'total':<33} {breakdown['total']:>10,}  ({verdict} budget {budget:,})")
    warning = budget_warning(breakdown["total"], budget)
    return "trainable parameters:\n" + "\n".join(rows + ([f"  warning: {warning}"] if warning else []))


def budget_warning(total: int, budget: int) -> str:
    """A budget may be raised above the competition's rule for experiments, never for an entry: "" when not."""
    if budget <= COMPETITION_PARAM_LIMIT:
        return ""
    over = "; this config breaks it: not a valid entry" if total > COMPETITION_PARAM_LIMIT else ""
    return (f"param_budget {budget:,} is above the competition's rule of at most {COMPETITION_PARAM_LIMIT:,} "
            f"trainable parameters{over}")


def check_budget(cfg: Config, breakdown: dict) -> None:
    if breakdown["total"] > cfg.param_budget:
        raise BudgetError(
            f"{breakdown['total']:,} trainable parameters exceed param_budget {cfg.param_budget:,}\n"
            + format_breakdown(breakdown, cfg.param_budget)
        )


def model_config(cfg: Config) -> Config:
    """The config the model is trained with: this run's own (held to the budget, lengths checked against the
    encoder), or, to predict only, the one saved beside the adapter (checked against adapter_sha256)."""
    if not cfg.adapter_from:
        check_lengths(cfg)
        breakdown = param_breakdown(cfg)
        print(format_breakdown(breakdown, cfg.param_budget), flush=True)
        check_budget(cfg, breakdown)
        return cfg
    folder = Path(cfg.adapter_from)
    if not (folder / "kit.json").is_file():
        raise ConfigError(f"adapter_from {folder} holds no kit.json; point it at a previous run's adapter/")
    digest = adapter_digest(folder) if cfg.adapter_sha256 else ""
    if digest != cfg.adapter_sha256:
        raise ConfigError(f"the adapter in {folder} has sha256 {digest}, not the adapter_sha256 "
                          f"{cfg.adapter_sha256} this run was pushed for")
    kit = adapter_kit(folder)
    try:
        trained = apply_overrides(Config(), {k: v for k, v in kit["config"].items() if k in CONFIG_KEYS})
    except ConfigError as exc:
        raise ConfigError(f"{folder / 'kit.json'} holds a config this kernel refuses: {exc}") from None
    check_lengths(dataclasses.replace(trained, predict_max_length=cfg.predict_max_length))
    print(f"predict only, with the adapter in {folder} (trained with config_hash {config_hash(trained)[:12]})")
    return trained


def load_adapter_model(cfg: Config, trained: Config) -> Model:
    """A previous run's model from its adapter folder, on the encoder it was trained on (or this run's
    `model`, when set), with its calibration temperature; it predicts at this run's predict_max_length."""
    folder = Path(cfg.adapter_from)
    source = cfg.model if cfg.model != Config.model else trained.model
    source = str(folder / "base") if (folder / "base").is_dir() else source
    kit = adapter_kit(folder)
    hidden = encoder_config(Config(model=source)).hidden_size
    if hidden != kit["hidden_size"]:
        raise ConfigError(f"the adapter in {folder} was trained on an encoder of hidden size {kit['hidden_size']}, "
                          f"but {source} has {hidden}: predict with the encoder it was trained on (--set model=)")
    net = build_model(trained, source, adapter=folder)
    temperature = float(kit["temperature"]) if kit["temperature"] else None  # None: fitted again
    config = dataclasses.replace(trained, predict_max_length=cfg.predict_max_length)
    return Model(net, load_tokenizer(source), config, source, param_breakdown(trained), temperature, trained=True)


def load_head(head: nn.Module, path: Path) -> None:
    """A saved head's weights: tensors only (torch's safe loader), shaped for this head and encoder."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's own text would suggest weights_only=False: never for a file from elsewhere
        raise ConfigError(f"{path} is not a head saved by this kernel (it must hold only tensors)") from None
    try:
        head.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise ConfigError(f"{path} does not fit this head ({len(state) if isinstance(state, dict) else 0} tensors "
                          "for another head kind or encoder size): use the adapter with the encoder it was trained "
                          "on") from None


def load_lora(encoder: nn.Module, adapter: Path) -> nn.Module:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(encoder, str(adapter))
    except Exception as exc:  # peft fails in many ways on a foreign adapter; every one is the same user error
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        why = type(exc).__name__ + ("" if "weights_only" in str(exc) else f": {first}")
        raise ConfigError(f"the LoRA adapter in {adapter} does not load on this encoder ({why}): it was saved for "
                          "another encoder or by other code") from None


# --------------------------------------------------------------------------------------------- batching
def encode_for_prediction(cfg: Config, model: Model, data: Data) -> Encoded:
    """Validation and test token ids at the prediction length of the model (this run's, for a loaded adapter)."""
    length = model.config.predict_length
    tokenizer = model.tokenizer
    return Encoded(encode_texts(tokenizer, [data.texts[i] for i in data.val_rows], length),
                   encode_texts(tokenizer, data.test_texts, length), tokenizer.pad_token_id, length,
                   cfg.eval_batch_size)


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
        chunk = chunk[longest_first(lengths[chunk])]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Prediction batches in length order (longest first), so each pads to a near neighbour."""
    order = longest_first(lengths)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def longest_first(lengths) -> np.ndarray:
    """The indices of `lengths` from the longest to the shortest, ties in their order (the one length order of
    training's groups, prediction's batches and the prediction batch's fit)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


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
    return to_device(ids, device), to_device(mask, device)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`. To a GPU through pinned memory without waiting, so the host queues the next step while the
    GPU runs; a CPU tensor stays itself on CPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# --------------------------------------------------------------------------------------------- training
def train_model(ctx: RunContext, model: Model, data: Data, encoded: Encoded) -> Training:
    """Epochs of LoRA training with the best epoch's weights kept, then the pseudo-label rounds (one epoch each on
    the training rows and the test rows the model is sure of). In this process, or data-parallel over ctx.world
    spawned ranks. A loaded adapter has nothing to train; a signal before the first epoch finished leaves nothing
    to predict with."""
    cfg, training = ctx.cfg, Training()
    if model.trained:
        return training
    train_ids = encode_texts(model.tokenizer, [data.texts[i] for i in data.train_rows], cfg.max_length)
    rows = TrainData(augmented_epochs(cfg, model.tokenizer, data, train_ids), data.labels[data.train_rows],
                     encoded.val_ids, data.val_labels, encoded.pad_id, encoded.batch_size)
    for round_ in range(1 + cfg.pseudo_label_rounds):
        if round_:
            if ctx.stop.requested() or training.stopped_early:
                break
            probs = predict(ctx, model, data, encoded).probs  # the current model's, calibrated
            keep = np.flatnonzero(probs.max(axis=1) >= cfg.pseudo_label_threshold)
            training.pseudo_label_rows.append(int(len(keep)))
            print(f"pseudo-label round {round_}: {len(keep):,} confident test rows join the training rows")
            if not len(keep):
                break
            rows = dataclasses.replace(rows, epoch_ids=[train_ids + [encoded.test_ids[i] for i in keep]],
                                       labels=np.concatenate([data.labels[data.train_rows], probs[keep].argmax(1)]))
        epochs = 1 if round_ else cfg.epochs
        result = (train(ctx, rows, model.net.to(ctx.device), epochs) if ctx.world == 1 else
                  train_in_ranks(ctx, rows, model, epochs))
        if result["state"] is None and not round_:
            raise Interrupted(f"{ctx.stop.received} before the first epoch finished: no trained model to predict "
                              "with; nothing written", ctx.stop.received)
        if result["state"] is not None:
            load_trainable_state(model.net, result["state"])
        training.add(result, **({"pseudo_round": round_} if round_ else {}))
    return training


@dataclass
class TrainData:
    """What the training loop needs: token ids per epoch (augmentation varies them) and labels."""

    epoch_ids: list  # per epoch: a list of token-id lists, one per training row
    labels: np.ndarray
    val_ids: list
    val_labels: np.ndarray
    pad_id: int
    eval_batch_size: int  # what fitting_batch_size found


def train(ctx: RunContext, data: TrainData, net: Classifier, epochs: int) -> dict:
    """The training loop, in this process or in one data-parallel rank: AdamW with a linear warm-up then decay over
    `epochs` passes of this rank's share of the length-grouped batches. At each sync point (every SYNC_STEPS steps
    and an epoch's last) the ranks agree whether to stop (time limit, stop signal) or fail (non-finite loss or
    weights), and the loss curve gets a point. Each epoch is evaluated and the best one's trainable weights kept
    (rank 0 holds them); a signal skips the unfinished epoch's evaluation (the time limit does not)."""
    loop = start_loop(ctx, data, net, epochs)
    for epoch in range(epochs):
        batches, ids_epoch = loop.begin_epoch(ctx, data, epoch)
        for step, batch in enumerate(batches, 1):
            seqs = [ids_epoch[i] for i in batch]
            ids, mask = pad_batch(seqs, data.pad_id, ctx.device)
            labels = to_device(torch.as_tensor(data.labels[batch]), ctx.device)
            loss = train_step(loop.net, ids, mask, labels, loop.opt)
            loop.count(loss, len(batch) * ctx.world, sum(len(s) for s in seqs) * ctx.world)
            if (step % SYNC_STEPS == 0 or step == len(batches)) and sync_point(ctx, loop, epoch, step):
                break
        if loop.signalled and step < len(batches):
            break  # an unfinished epoch is not evaluated: the best finished one predicts
        end_epoch(ctx, data, loop, epoch)
        if loop.stopped or loop.signalled:
            break
    loop.progress.close()
    return loop.result()


def train_step(model, ids, mask, labels, opt: Optimization) -> torch.Tensor:
    """One optimizer step; returns the loss on the device (no host sync)."""
    with torch.autocast(device_type=ids.device.type, dtype=opt.dtype or torch.float32, enabled=opt.dtype is not None):
        logits = model(ids, mask)
    loss = F.cross_entropy(logits.float(), labels)
    opt.scaler.scale(loss).backward()
    if opt.grad_clip > 0:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in opt.optimizer.param_groups for p in g["params"]], opt.grad_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scheduler.step()
    return loss.detach()


@dataclass
class Optimization:
    """What an optimizer step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer  # AdamW (make_optimizer)
    scheduler: object  # warm-up then linear decay (make_scheduler)
    scaler: object  # fp16's loss scaler; a pass-through otherwise (grad_scaler)
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    grad_clip: float  # max global gradient norm; 0 = off


def make_optimizer(params: list, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def make_scheduler(optimizer, total_steps: int, warmup_ratio: float):
    """transformers' linear warm-up from 0 over warmup_ratio of the steps, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(total_steps * warmup_ratio), total_steps)


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


@dataclass
class Loop:
    """The training loop's state across epochs and sync points."""

    model: Classifier
    net: nn.Module  # the model, wrapped for data parallel when there are several ranks
    params: list  # the trainable tensors
    opt: Optimization
    progress: Progress
    rng: np.random.Generator  # shuffles the batches
    lengths: list  # per epoch's token ids: each row's length
    steps: int  # steps per epoch and rank
    history: list = field(default_factory=list)
    curve: list = field(default_factory=list)  # the loss curve: metrics.json's loss_curve
    best: dict | None = None  # the best epoch's trainable weights (rank 0 alone keeps them)
    best_acc: float = -1.0
    stopped: bool = False  # the time limit was reached
    signalled: bool = False  # a stop signal arrived, in some rank
    seen: int = 0  # rows trained on, all ranks together
    tokens: int = 0
    done: int = 0  # steps taken in this rank
    loss_sum: torch.Tensor | None = None  # this epoch's finite losses in this rank, on the device (no host sync)
    finite_steps: torch.Tensor | None = None
    synced: tuple = (0.0, 0.0)  # this epoch's loss sum and finite steps, all ranks, at its last sync point
    started: float = field(default_factory=time.perf_counter)

    def begin_epoch(self, ctx: RunContext, data: TrainData, epoch: int) -> tuple[list, list]:
        """This rank's batches of the epoch (as many as every other rank's) and the epoch's token ids."""
        batches = length_grouped_batches(self.lengths[epoch % len(self.lengths)], ctx.cfg.batch_size, self.rng)
        self.net.train()
        self.loss_sum, self.finite_steps = torch.zeros((), device=ctx.device), torch.zeros((), device=ctx.device)
        self.synced = (0.0, 0.0)
        return batches[: self.steps * ctx.world][ctx.rank::ctx.world], data.epoch_ids[epoch % len(data.epoch_ids)]

    def count(self, loss: torch.Tensor, rows: int, tokens: int) -> None:
        """One step: its loss when finite (summed on the device), and the rows and tokens of all ranks."""
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss, 0.0)
        self.finite_steps += finite
        self.seen, self.tokens, self.done = self.seen + rows, self.tokens + tokens, self.done + 1

    def add_point(self, epoch: int, step: int, loss_sum: float, finite_steps: float) -> None:
        """A point of the loss curve at this sync point: all ranks' mean loss over the finite steps since the last."""
        if finite_steps > self.synced[1] and len(self.curve) < LOSS_CURVE_POINTS:
            self.curve.append({"step": epoch * self.steps + step, "epoch": round(epoch + step / self.steps, 4),
                               "loss": round((loss_sum - self.synced[0]) / (finite_steps - self.synced[1]), 6)})
        self.synced = (loss_sum, finite_steps)

    def result(self) -> dict:
        return {"state": self.best, "history": self.history, "train_seconds": time.perf_counter() - self.started,
                "samples": self.seen, "tokens": self.tokens, "stopped_early": self.stopped,
                "signalled": self.signalled, "loss_curve": self.curve, "steps": self.done}


def start_loop(ctx: RunContext, data: TrainData, model: Classifier, epochs: int) -> Loop:
    """The loop's optimizer, schedule, batch order and progress display, before the first step."""
    params = [p for p in model.parameters() if p.requires_grad]
    net = model
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    rng = np.random.default_rng(ctx.cfg.seed)
    lengths = [np.array([len(s) for s in ids]) for ids in data.epoch_ids]
    steps = len(length_grouped_batches(lengths[0], ctx.cfg.batch_size, rng)) // ctx.world
    optimizer = make_optimizer(params, ctx.cfg, ctx.device)
    opt = Optimization(optimizer, make_scheduler(optimizer, steps * epochs, ctx.cfg.warmup_ratio),
                       grad_scaler(ctx.dtype), ctx.dtype, ctx.cfg.grad_clip)
    progress = Progress(steps * epochs, epochs, ctx.cfg.progress_seconds if ctx.rank == 0 else None)
    return Loop(model, net, params, opt, progress, rng, lengths, steps)


def sync_point(ctx: RunContext, loop: Loop, epoch: int, step: int) -> bool:
    """All ranks agree on whether to stop (the time limit, a stop signal) or fail (non-finite trainable weights, or a
    non-finite loss that no fp16 GradScaler skip explains): DDP would hang if they did not. Their summed losses
    give the loss curve its point and the progress its mean; True: stop."""
    diverged = not bool(torch.stack([torch.isfinite(p).all() for p in loop.params]).all()) or (
        not loop.opt.scaler.is_enabled() and loop.finite_steps.item() < step)
    late, signalled, diverged, loss_sum, finite_steps = reduce_sum(
        [time.monotonic() > ctx.deadline, ctx.stop.requested(), diverged, loop.loss_sum.item(),
         loop.finite_steps.item()], ctx)
    if diverged:
        raise DivergedError(f"training diverged at epoch {epoch + 1} step {step}: non-finite loss or weights (try a "
                            "lower lr); no submission written")
    loop.add_point(epoch, step, loss_sum, finite_steps)
    loop.progress.update(epoch + 1, step, loop.steps, loop.seen, loss_sum / max(1.0, finite_steps))
    loop.stopped, loop.signalled = bool(late), bool(signalled)
    return loop.stopped or loop.signalled


def end_epoch(ctx: RunContext, data: TrainData, loop: Loop, epoch: int) -> None:
    """The epoch's evaluation, its line in the history and the log, and the best state kept. Its training loss is
    all ranks' mean over its finite steps, as its last sync point summed them."""
    loss_sum, finite_steps = loop.synced
    if finite_steps == 0:
        raise DivergedError(f"training diverged: every step of epoch {epoch + 1} had a non-finite loss; "
                            "no submission written")
    val_loss, val_acc = evaluate(ctx, loop.model, data)
    loop.history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / finite_steps, 5),
                         "val_loss": round(val_loss, 5), "val_accuracy": round(val_acc, 5),
                         "stopped_early": loop.stopped})
    if ctx.rank == 0:
        print(f"epoch {epoch + 1}: train_loss {loop.history[-1]['train_loss']:.4f}  val_loss {val_loss:.4f}  "
              f"val_acc {val_acc:.4f}" + ("  (time limit reached: stopping)" if loop.stopped else ""), flush=True)
    if val_acc > loop.best_acc:
        loop.best_acc, loop.best = val_acc, trainable_state(loop.model) if ctx.rank == 0 else None


def evaluate(ctx: RunContext, model: Classifier, data: TrainData) -> tuple[float, float]:
    """Validation loss and accuracy; each rank scores a shard and the sums are all-reduced."""
    shard = np.arange(ctx.rank, len(data.val_ids), ctx.world)
    logits = predict_logits(model, [data.val_ids[i] for i in shard], data.eval_batch_size,
                            Feed(data.pad_id, ctx.device, ctx.dtype), desc="validate")
    labels = data.val_labels[shard]
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="sum").item()
    sums = reduce_sum([loss, float((logits.argmax(1) == labels).sum()), float(len(shard))], ctx)
    return sums[0] / sums[2], sums[1] / sums[2]


def trainable_state(model: Classifier) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_trainable_state(model: Classifier, state: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


class Progress:
    """Training progress at each sync point: a tqdm bar on a terminal; elsewhere (Kaggle's log, where tqdm
    stays silent) a plain line every `interval` seconds (progress_seconds). `interval` None: nothing shown."""

    def __init__(self, total_steps: int, epochs: int, interval: float | None):
        from tqdm.auto import tqdm

        self.total, self.epochs, self.start, self.last = total_steps, epochs, time.perf_counter(), 0.0
        self.bar = tqdm(total=total_steps, desc="train") if interval is not None and sys.stderr.isatty() else None
        self.interval = interval if interval is not None and self.bar is None else math.inf

    def update(self, epoch: int, step: int, steps: int, rows: int, loss: float) -> None:
        """At step `step` of `steps` in epoch `epoch` (both from 1), `rows` trained on, the epoch's mean loss."""
        now = time.perf_counter()
        done = (epoch - 1) * (self.total // self.epochs) + step
        elapsed = max(now - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(epoch=f"{epoch}/{self.epochs}", loss=f"{loss:.4f}", rows_s=f"{rows / elapsed:.0f}")
        elif now - self.last >= self.interval:
            self.last = now
            left = elapsed / max(done, 1) * (self.total - done)
            print(f"epoch {epoch}/{self.epochs} step {step}/{steps} | {rows / elapsed:.0f} rows/s | loss {loss:.4f} | "
                  f"{_duration(elapsed)} elapsed, ~{_duration(left)} left", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ---------------------------------------------------------------- training on every GPU (data parallel)
# With several processes (one per GPU), train_model hands the training to train_in_ranks, which spawns the ranks;
# each builds its model and runs train() on its share of every epoch's batches under DistributedDataParallel, and
# rank 0 hands back the best state through a file. The run context crosses to them, so every rank agrees on the
# config, the deadline and the stop marker.
def process_count(cfg: Config) -> int:
    """Data-parallel processes that train: `processes`, else one per GPU; one for a predict-only run."""
    if cfg.adapter_from:
        return 1
    if cfg.processes:
        return cfg.processes
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_in_ranks(ctx: RunContext, data: TrainData, model: Model, epochs: int) -> dict:
    """train(), data-parallel over ctx.world spawned ranks (ddp_worker); rank 0's result."""
    import torch.multiprocessing as mp

    model.net.cpu()  # the ranks train their own copies: this process's GPU memory (prediction's too) is freed
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="agnews_ddp_") as tmp:
        job = RankJob(free_port(), model.source, trainable_state(model.net), epochs, os.path.join(tmp, "result.pt"))
        mp.spawn(ddp_worker, nprocs=ctx.world, join=True, args=(ctx, data, job))
        result = torch.load(job.result, weights_only=False)
    if "diverged" in result:
        raise DivergedError(result["diverged"])
    return result


@dataclass(frozen=True)
class RankJob:
    """What a spawned rank needs besides the run context and the rows."""

    port: int  # the rendezvous port on 127.0.0.1
    source: str  # where the encoder weights load from
    state: dict  # the trainable weights to start from
    epochs: int
    result: str  # the file rank 0 saves its result in


def ddp_worker(rank: int, ctx: RunContext, data: TrainData, job: RankJob) -> None:
    """One data-parallel rank: train, then rank 0 alone saves the best state; the others just exit."""
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= ctx.world
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # ranks share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.world))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{job.port}",
                            rank=rank, world_size=ctx.world)
    try:
        with StopSignal(ctx.stop.marker).installed() as stop:
            torch.manual_seed(ctx.cfg.seed)
            model = build_model(ctx.cfg, job.source).to(device)
            load_trainable_state(model, job.state)
            try:
                result = train(dataclasses.replace(ctx, device=device, rank=rank, stop=stop), data, model, job.epochs)
            except DivergedError as exc:  # every rank raises it at the same step; rank 0 reports it
                result = {"diverged": str(exc)}
        if rank == 0:
            torch.save(result, job.result)
    finally:
        dist.destroy_process_group()


def reduce_sum(values: list, ctx: RunContext) -> list:
    """Each value summed over the ranks (a flag: how many ranks raised it); as they are with one process."""
    if ctx.world == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# --------------------------------------------------------------------------- prediction and calibration
def predict(ctx: RunContext, model: Model, data: Data, encoded: Encoded) -> Prediction:
    """Validation and test logits, the temperature (fitted unless the adapter brought one) and the corrected
    test probabilities; non-finite probabilities are refused before anything is written."""
    feed = Feed(encoded.pad_id, ctx.device, ctx.dtype)
    net = model.net.to(ctx.device)
    val_logits = predict_logits(net, encoded.val_ids, encoded.batch_size, feed, "validate")
    temperature = model.temperature or fit_temperature(val_logits, data.val_labels)
    started = time.perf_counter()
    test_logits = predict_logits(net, encoded.test_ids, encoded.batch_size, feed, "test")
    probs, prior = corrected_probabilities(test_logits, temperature, ctx.cfg.prior_correction, data.train_prior)
    bad = int((~np.isfinite(probs).all(axis=1)).sum())
    if bad:
        raise DivergedError(f"non-finite probabilities for {bad:,} of {len(probs):,} test rows; no submission written")
    return Prediction(val_logits, test_logits, temperature, probs, prior, time.perf_counter() - started)


# torch >= 2.5 names it torch.OutOfMemoryError; older releases only torch.cuda's (the same class today).
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class Feed:
    """How token ids reach a model: padded with `pad_id`, on `device`, under autocast to `dtype` (None: fp32)."""

    pad_id: int
    device: torch.device
    dtype: torch.dtype | None = None


@torch.no_grad()
def batch_logits(model, seqs: list[list[int]], feed: Feed) -> np.ndarray:
    model.eval()
    ids, mask = pad_batch(seqs, feed.pad_id, feed.device)
    with torch.autocast(device_type=feed.device.type, dtype=feed.dtype or torch.float32,
                        enabled=feed.dtype is not None):
        return model(ids, mask).float().cpu().numpy()


def predict_logits(model, seqs: list[list[int]], batch_size: int, feed: Feed, desc: str = "predict") -> np.ndarray:
    """Logits in the input's order; batches run in length order (sorted_batches') and the order is restored
    after. A batch that runs out of memory is retried with half as many rows, and so are the rest."""
    from tqdm.auto import tqdm

    order = longest_first([len(s) for s in seqs])
    out = np.zeros((len(seqs), len(LABELS)), dtype=np.float32)
    start, size = 0, batch_size
    with tqdm(total=len(order), desc=desc, leave=False, disable=None) as bar:
        while start < len(order):
            rows = order[start:start + size]
            try:
                out[rows] = batch_logits(model, [seqs[i] for i in rows], feed)
            except OUT_OF_MEMORY:
                size = halved_batch(size, desc)
                continue
            start += len(rows)
            bar.update(len(rows))
    return out


def halved_batch(size: int, desc: str) -> int:
    """The batch size to retry with after running out of memory with `size` rows."""
    if size == 1:
        raise KernelError(f"{desc}: out of memory with one row per batch; lower predict_max_length")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(f"{desc}: out of memory with {size} rows per batch; retrying with {size // 2}", file=sys.stderr, flush=True)
    return size // 2


def fitting_batch_size(model, seqs: list[list[int]], batch_size: int, feed: Feed) -> int:
    """The largest prediction batch, at most `batch_size`, that fits in memory with the longest rows of `seqs`:
    tried before training, so that a prediction batch too large is not found only after it."""
    longest = [seqs[i] for i in longest_first([len(s) for s in seqs])[:batch_size]]
    while True:
        try:
            batch_logits(model, longest[:batch_size], feed)
            return batch_size
        except OUT_OF_MEMORY:
            batch_size = halved_batch(batch_size, "prediction check")


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


# ---------------------------------------------------------------------------------------------- outputs
def write_outputs(ctx: RunContext, inputs: Inputs, data: Data, model: Model, training: Training,
                  prediction: Prediction) -> dict:
    """Every output, written into the staging folder scratch/outputs; returns the metrics."""
    stage, cfg = ctx.scratch / "outputs", ctx.cfg
    stage.mkdir()
    write_submission(stage / "submission.csv", prediction.labels)
    probs = prediction.probs
    pd.DataFrame({"ID": np.arange(len(probs)), **{f"p_{i}": probs[:, i].round(6) for i in range(len(LABELS))}}
                 ).to_csv(stage / "probabilities.csv", index=False)
    # Raw logits let post-processing be compared without retraining (bench/accuracy.py reads them).
    np.savez_compressed(stage / "logits.npz", val_logits=prediction.val_logits, val_labels=data.val_labels,
                        val_ids=data.val_ids, val_ids_sha256=data.val_ids_sha256,
                        test_logits=prediction.test_logits, train_prior=data.train_prior,
                        temperature=prediction.temperature)
    if model.trained:  # the adapter predicted with: carried along unchanged
        copy_tree(Path(cfg.adapter_from), stage / "adapter")
    else:  # keep_adapter published it before predicting: only its kit.json changes, now with the temperature
        (stage / "adapter").mkdir()
        write_json(stage / "adapter" / "kit.json", kit_of(model, prediction.temperature))
    metrics = metrics_of(ctx, inputs, data, model, training, prediction)
    metrics["plots"] = save_plots(stage, training.history, confusion_of(data, prediction))
    write_json(stage / "config.json", {**dataclasses.asdict(cfg), "config_hash": config_hash(cfg)})
    write_json(stage / "metrics.json", metrics)
    return metrics


OUTPUT_NAMES = ("submission.csv", "probabilities.csv", "logits.npz", "config.json", "metrics.json",
                "curves.png", "confusion.png", "adapter")  # published in this order: the submission first


def write_submission(path: Path, labels: np.ndarray) -> None:
    pd.DataFrame({"ID": np.arange(len(labels)), "Label": labels.astype(int)}).to_csv(path, index=False)
    validate_submission(path, len(labels))


def submission_problem(frame: pd.DataFrame, expected_rows: int) -> str | None:
    """Why a submission frame is invalid, or None: the one rule set for the kernel and lorakit."""
    if list(frame.columns) != ["ID", "Label"]:
        return f"columns must be exactly ID,Label, got {','.join(map(str, frame.columns))}"
    if len(frame) != expected_rows:
        return f"{len(frame)} rows, expected {expected_rows}"
    for column in ("ID", "Label"):
        if not pd.api.types.is_integer_dtype(frame[column]):  # "1.0" is refused too: Kaggle wants integers
            values = frame[column].astype(str)
            bad = values[~values.str.fullmatch(r"-?\d+")]
            example = f"; row {bad.index[0]} holds {bad.iloc[0]!r}" if len(bad) else ""
            return f"{column} must hold integers on every row{example}"
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


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def confusion_of(data: Data, prediction: Prediction) -> np.ndarray:
    """Validation counts: true label by row, predicted label by column."""
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(confusion, (data.val_labels, prediction.val_logits.argmax(axis=1)), 1)
    return confusion


def metrics_of(ctx: RunContext, inputs: Inputs, data: Data, model: Model, training: Training,
               prediction: Prediction) -> dict:
    cfg, seconds, confusion = ctx.cfg, max(training.seconds, 1e-9), confusion_of(data, prediction)
    history, labels = training.history, prediction.labels
    return {
        "config_hash": config_hash(cfg),
        "trainable_params": model.breakdown["total"],
        "param_breakdown": model.breakdown,
        "val_accuracy": float((prediction.val_logits.argmax(axis=1) == data.val_labels).mean()),
        "val_rows": int(len(data.val_rows)),
        "per_class_val_accuracy": {LABELS[i]: float(confusion[i, i] / max(1, confusion[i].sum()))
                                   for i in range(len(LABELS))},
        "history": history,
        "loss_curve": training.loss_curve,
        "best_epoch": max(history, key=lambda h: h["val_accuracy"])["epoch"] if history else None,
        "stopped_early": training.stopped_early,
        "interrupted": bool(ctx.stop.received),
        "signal": ctx.stop.received or None,
        "train_rows": int(len(data.train_rows)),
        "train_seconds": round(training.seconds, 2),
        "train_samples_per_second": round(training.samples / seconds, 2),
        "tokens_per_second": round(training.tokens / seconds, 1),
        "predict_seconds": round(prediction.seconds, 2),
        "total_seconds": round(time.monotonic() - ctx.started, 2),
        "test_file": str(inputs.test),
        "predicted_on": inputs.predicted_on(len(labels)),
        "model": model_description(model),
        "test_rows": len(labels),
        "test_label_distribution": {LABELS[i]: int((labels == i).sum()) for i in range(len(LABELS))},
        "temperature": prediction.temperature,
        "test_prior_estimate": None if prediction.test_prior is None else [round(float(p), 5)
                                                                            for p in prediction.test_prior],
        "pseudo_label_rows": training.pseudo_label_rows,
        "predict_only": model.trained,
        "device": describe_device(ctx.device, ctx.world),
        "processes": ctx.world,
        "precision": str(ctx.dtype or "fp32").replace("torch.", ""),
        "versions": library_versions(),
        "config": dataclasses.asdict(cfg),
        "push": push_record(),
    }


def describe_device(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{world}" if world > 1 else torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)" + (f" x{world} processes" if world > 1 else "")


def model_description(model: Model) -> str:
    if model.config.smoke:  # its config still names roberta-base, which a smoke run never loads
        return f"tiny random encoder (smoke run), not {model.config.model}"
    return model.source


def library_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "numpy", "pandas", "pyarrow"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


def save_plots(out: Path, history: list[dict], confusion: np.ndarray) -> list[str]:
    """Loss and accuracy curves and the normalised confusion matrix; skipped without matplotlib or history."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: plots skipped")
        return []
    if not history:
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


def print_summary(metrics: dict, out: Path, inputs: Inputs) -> None:
    stopped = f", {metrics['signal']}: interrupted" if metrics["signal"] else ""
    print(f"\nval_accuracy {metrics['val_accuracy']:.4f} | train {metrics['train_seconds']:.0f}s "
          f"({metrics['train_samples_per_second']:.0f} rows/s) | predict {metrics['predict_seconds']:.1f}s\n"
          f"test label distribution {metrics['test_label_distribution']}\nwrote {out / 'submission.csv'} "
          f"({metrics['test_rows']} rows, validated{stopped})\n{inputs.describe()}", flush=True)


# ======================================================================================================
# Appendix: the guards and the plumbing. Nothing below is needed to follow the learning above.
# ======================================================================================================
# ----------------------------------------------------------------------------------------------- errors
class KernelError(Exception):
    """A user-facing failure: printed as one line, exit status non-zero."""

    exit_code = 2


class ConfigError(KernelError):
    pass


class BudgetError(KernelError):
    exit_code = 3


class DataError(KernelError):
    """Bad input data. Its message is printed as one line: control characters from a file become '?'."""

    def __init__(self, message: str):
        super().__init__(re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", message))


class SubmissionError(KernelError):
    pass


class DivergedError(KernelError):
    """Training or prediction produced non-finite numbers: no submission is written."""

    exit_code = 4


class PublishError(KernelError):
    """submission.csv reached the output folder, but some other output did not."""

    exit_code = 5


class Interrupted(KernelError):
    """A signal stopped the run before there was anything to write."""

    def __init__(self, message: str, signame: str):
        super().__init__(message)
        self.signame = signame
        self.exit_code = 128 + signal.Signals[signame].value


# ----------------------------------------------------------------------------------------- config rules
def field_type(key: str) -> type:
    return {"int": int, "float": float, "str": str, "bool": bool}[Config.__dataclass_fields__[key].type]


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, CONFIG_KEYS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown config key {key!r}; {hint}valid keys: {', '.join(CONFIG_KEYS)}")


def _typed(key: str, value):
    """The one type check of a config value (ints are accepted for floats)."""
    if key not in CONFIG_KEYS:
        raise _unknown_key(key)
    want = field_type(key)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key {key!r} expects {want.__name__}, got {value!r}")


def parse_sets(items) -> dict:
    """`key=value` strings (as given to --set) parsed by their field's type; booleans are true/false."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key not in CONFIG_KEYS:
            raise _unknown_key(key)
        want = field_type(key)
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
    """`cfg` with `overrides` (each value type-checked here, once), then every rule checked."""
    return validate_config(dataclasses.replace(cfg, **{k: _typed(k, v) for k, v in overrides.items()}))


def interval_text(low, low_in, high, high_in) -> str:
    return f"{'[' if low_in else '('}{low}, {'inf' if high is None else high}{']' if high_in else ')'}"


def validate_config(cfg: Config) -> Config:
    """Every rule a value must meet (its field's Knob), checked before anything loads: kernel runs and `lorakit
    check` alike."""
    problems = [problem for key, rules in KNOBS.items() for problem in knob_problems(key, getattr(cfg, key), rules)]
    problems += length_problems(cfg, usable_positions(cfg))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return cfg


def knob_problems(key: str, value, rules: Knob) -> list[str]:
    """What is wrong with one value under its field's rules (an empty list: nothing)."""
    if rules.choices and value not in rules.choices:
        return [f"{key} must be one of {', '.join(rules.choices)}, got {value!r}"]
    if rules.pattern and not re.fullmatch(rules.pattern, value):
        return [f"{key} must {rules.rule}"]
    if rules.low is None and rules.high is None:
        return []
    if not math.isfinite(value) or not rules.admits(value):
        return [f"{key} must be a finite number in {interval_text(*rules.bounds)}, got {value}"]
    if rules.least_nonzero is not None and 0 < value < rules.least_nonzero:
        return [f"{key} must be 0 ({rules.zero}) or >= {rules.least_nonzero}, got {value}"]
    return []


def length_problems(cfg: Config, positions: int | None) -> list[str]:
    """The token lengths against the encoder's usable positions (None: not known here)."""
    if positions is None:
        return []
    return [f"{key} must be <= {positions}, the usable positions of {cfg.model}, got {getattr(cfg, key)}"
            for key, rules in KNOBS.items() if rules.within_positions and getattr(cfg, key) > positions]


def usable_positions(cfg: Config, local_only: bool = True) -> int | None:
    """Tokens one row may hold in the encoder, without weights; None when its config is not at hand (with
    `local_only`, a hub id other than roberta-base that is not in the local cache). RoBERTa-style encoders
    keep 2 positions for the padding offset."""
    arch = cfg.known_arch
    if arch is None:
        try:
            from transformers import AutoConfig

            arch = AutoConfig.from_pretrained(cfg.model, local_files_only=local_only).to_dict()
        except (OSError, ValueError):
            return None
    if "max_position_embeddings" not in arch:
        return None
    offset = 2 if arch.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer") else 0
    return int(arch["max_position_embeddings"]) - offset


def overrides_object(text: str, where: str = "the overrides block") -> dict:
    try:
        block = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(block, dict):
        raise ConfigError(f"{where} must hold a JSON object, got {type(block).__name__}")
    return block


def config_from_overrides(*layers: dict) -> Config:
    """The effective config: defaults (smoke runs start from SMOKE_DEFAULTS), then each layer in order."""
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(f"overrides must be a JSON object, got {type(layer).__name__}")
    merged = {k: v for layer in layers for k, v in layer.items()}
    smoke = _typed("smoke", merged["smoke"]) if "smoke" in merged else False
    return apply_overrides(Config(**SMOKE_DEFAULTS) if smoke else Config(), merged)


def resolve_config(config_file: str | None = None, sets=()) -> Config:
    """Defaults < AGNEWS_PROGRESS_SECONDS < this script's OVERRIDES_JSON < --config FILE < --set key=value."""
    from_file = {}
    if config_file:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read --config {config_file}: {exc.strerror}") from None
        from_file = overrides_object(text, f"--config {config_file}")
    return config_from_overrides(progress_alias(), overrides_object(OVERRIDES_JSON), from_file, parse_sets(sets))


def progress_alias() -> dict:
    """progress_seconds from the environment variable PROGRESS_ENV, when it is set (a config key beats it)."""
    raw = os.environ.get(PROGRESS_ENV)
    if not raw:
        return {}
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise ConfigError(f"{PROGRESS_ENV} must be a number of seconds >= 0, got {raw!r}")
    return {"progress_seconds": seconds}


def config_hash(cfg: Config) -> str:
    """sha256 of the canonical JSON of the effective config, without the output folder and data paths."""
    data = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in HASH_EXCLUDED}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


ON_KAGGLE_ENV = "AGNEWS_ON_KAGGLE"  # 1 or 0 says where the script runs; unset: Kaggle's own markers decide


def on_kaggle() -> bool:
    """Whether this is a Kaggle kernel (its output folder, input mounts, and lenient arguments)."""
    said = os.environ.get(ON_KAGGLE_ENV, "").strip()
    if said and said not in ("0", "1"):
        raise ConfigError(f"{ON_KAGGLE_ENV} must be 1 (on Kaggle) or 0 (elsewhere), got {said!r}")
    if said:
        return said == "1"
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or KAGGLE_WORKING.is_dir()


def output_path(cfg: Config) -> Path:
    if cfg.output_dir != "auto":
        return Path(cfg.output_dir)
    return KAGGLE_WORKING if on_kaggle() else Path("outputs")


# -------------------------------------------------------------------------------------- input discovery
def resolve_inputs(cfg: Config, scratch: Path) -> Inputs:
    """Which files the run reads, said out loud."""
    test_path = find_test_file(KAGGLE_INPUT) if cfg.test_data == "auto" else Path(cfg.test_data)
    train = find_train_source(KAGGLE_INPUT) if cfg.train_data == "auto" else cfg.train_data
    for key, value in (("test_data", str(test_path)), ("train_data", train)):
        if value != "hf:ag_news" and not Path(value).is_file():
            raise DataError(f"{key} {value} is not a file; pass --set {key}=PATH")
    print(f"test data: {test_path}\ntraining data: {train}", flush=True)
    own = {p.resolve() for p in competition_test_files(KAGGLE_INPUT)}
    kind = "smoke" if cfg.smoke else "competition" if test_path.resolve() in own else "other"
    return Inputs(cfg.model, train, test_path, kind, file_sha256(test_path), scratch)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unique_input(name: str, root: Path, key: str, accept=lambda path: True) -> Path | None:
    """The one file called `name` under `root` that `accept`s; several are refused, since any attached dataset
    could shadow the intended one."""
    found = [p for p in sorted(root.rglob(name)) if accept(p)] if root.is_dir() else []
    if len(found) > 1:
        raise DataError(f"{len(found)} candidate {name} files under {root}: {', '.join(map(str, found))}; "
                        f"choose one with --set {key}=PATH")
    return found[0] if found else None


def input_listing(root: Path, limit: int = 40) -> str:
    if not root.is_dir():
        return f"{root} does not exist"
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    more = f" ... and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(files[:limit]) + more if files else f"{root} is empty"


def competition_test_files(root: Path) -> tuple[Path, Path]:
    """Where Kaggle mounts the competition's own test file (the path has varied between images)."""
    return root / COMPETITION / TEST_FILE_NAME, root / "competitions" / COMPETITION / TEST_FILE_NAME


def find_test_file(root: Path = KAGGLE_INPUT) -> Path:
    """The competition's own test_unlabelled.pkl; elsewhere under `root` only when it is absent (with a warning:
    predictions on another dataset's file are no submission)."""
    for path in competition_test_files(root):
        if path.is_file():
            return path
    found = unique_input(TEST_FILE_NAME, root, "test_data")
    if found:
        print(f"warning: the competition {COMPETITION} is not attached: reading {found}, another dataset's file; "
              f"attach the competition (competition_sources) before submitting", file=sys.stderr, flush=True)
        return found
    if on_kaggle():
        raise DataError(f"{TEST_FILE_NAME} not found under {root}; attach the competition {COMPETITION}. "
                        f"Found: {input_listing(root)}")
    raise DataError(f"no {TEST_FILE_NAME} here ({root} is Kaggle's input folder): pass --set test_data=PATH "
                    f"(kaggle competitions download -c {COMPETITION})")


def find_train_source(root: Path = KAGGLE_INPUT) -> str:
    """An attached AG News train.csv (internet off works), else the Hugging Face dataset."""
    found = unique_input("train.csv", root, "train_data", has_ag_news_columns)
    return str(found) if found else "hf:ag_news"


def has_ag_news_columns(path: Path) -> bool:
    try:
        return set(AG_NEWS_COLUMNS) <= set(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError):
        return False


def locate_adapter(cfg: Config, root: Path = KAGGLE_INPUT) -> Config:
    """To predict only: `cfg` with adapter_from pointing at the adapter. When that path is absent and
    adapter_sha256 is set, the attached folder holding exactly that adapter (Kaggle's mount paths vary)."""
    if not cfg.adapter_from or Path(cfg.adapter_from).is_dir() or not cfg.adapter_sha256:
        return cfg
    for kit in sorted(root.rglob("kit.json")) if root.is_dir() else []:
        if adapter_digest(kit.parent) == cfg.adapter_sha256:
            print(f"adapter_from {cfg.adapter_from} is absent; {kit.parent} holds the adapter of adapter_sha256")
            return dataclasses.replace(cfg, adapter_from=str(kit.parent))
    raise ConfigError(f"adapter_from {cfg.adapter_from} does not exist, and no folder under {root} holds the "
                      f"adapter with adapter_sha256 {cfg.adapter_sha256[:12]}...: attach its dataset")


# --------------------------------------------------------------------------- the checks before training
def announce(cfg: Config) -> None:
    """The effective config, first in the log (with a smoke run's notice), and quieter libraries."""
    quiet_libraries()
    if cfg.smoke:
        print(SMOKE_NOTICE, flush=True)
    print("effective config:\n" + json.dumps(dataclasses.asdict(cfg), indent=2), flush=True)


def quiet_libraries() -> None:
    """Notices that are expected with a frozen encoder (unused pooler, new head) would bury the log."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # weight loading and shard writing bars


def accelerator() -> torch.device:
    """The device to run on; a GPU that the installed torch has no kernels for stops the run at once."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda:0")
    capability, arches = torch.cuda.get_device_capability(device), torch.cuda.get_arch_list()
    if not gpu_supported(capability, arches):
        raise KernelError(f"this GPU ({torch.cuda.get_device_name(device)}, compute capability "
                          f"{capability[0]}.{capability[1]}) cannot run torch {torch.__version__} (built for "
                          f"{' '.join(arches)}); pick the accelerator 'GPU T4 x2' (machine_shape NvidiaTeslaT4)")
    return device


def gpu_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build for `arch_list` runs on a GPU of `capability`: a cubin of the same major version and no
    newer minor, or PTX (compute_XY) no newer than the GPU. An empty list means torch cannot tell: try."""
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", arch)
        if not match:
            continue
        built = (int(match.group(2)), int(match.group(3)))
        if (match.group(1) == "sm" and built[0] == capability[0] and built[1] <= capability[1]) or (
                match.group(1) == "compute" and built <= tuple(capability)):
            return True
    return not arch_list


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_lengths(cfg: Config) -> None:
    """The length rules against the encoder's own config, fetched if need be (validate_config has only
    checked what is at hand offline)."""
    problems = length_problems(cfg, usable_positions(cfg, local_only=False))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def check_output_folder(out: Path, scratch: Path, size: int) -> None:
    """Refuses, before training, an output folder that could not take `size` bytes of outputs: one that cannot be
    created or written, or without the room (outputs are staged in `scratch`, then copied beside the old ones)."""
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    fix = "choose another with --set output_dir=PATH"
    if not existing.is_dir():
        raise ConfigError(f"output_dir {out} cannot be created: {existing} is not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir {out} is not writable ({existing}: permission denied or read-only); {fix}")
    shared = existing.stat().st_dev == scratch.stat().st_dev
    for folder, what, need in ((existing, f"output_dir {out}", size * (3 if shared else 2)),
                               (scratch, f"the temporary folder {scratch}", size)):
        free = shutil.disk_usage(folder).free
        if free < need:
            raise ConfigError(f"{what} has {free / 2**20:.1f} MiB free, but the outputs need about "
                              f"{need / 2**20:.1f} MiB there; free some space or {fix}")


def outputs_size(cfg: Config, data: Data, model: Model) -> int:
    """A generous estimate of the outputs' bytes: the CSVs and logits by row, the adapter by parameter (with a
    generated encoder, or a loaded adapter's files), 2 MiB for the JSON files and plots."""
    rows, val = len(data.test_texts), len(data.val_rows)
    tables = rows * 80 + (rows + val) * len(LABELS) * 4 + val * 8
    adapter = tree_size(Path(cfg.adapter_from)) if model.trained else (
        model.breakdown["total"] * 4 + (tree_size(Path(model.source)) if model.generated else 0))
    return tables + adapter + 2 * 2**20


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else 0


def check_training_batches(ctx: RunContext, data: Data, model: Model) -> None:
    """Every process that trains needs a batch each step: fewer batches than processes would train nothing (and
    read as a diverged run)."""
    batches = -(-len(data.train_rows) // ctx.cfg.batch_size)  # what length_grouped_batches makes of them
    if not model.trained and batches < ctx.world:
        raise ConfigError(f"batch_size {ctx.cfg.batch_size} makes {batches} batch(es) of the "
                          f"{len(data.train_rows):,} training rows, fewer than the {ctx.world} processes that "
                          "train: lower batch_size or processes")


def check_prediction_batch(ctx: RunContext, model: Model, encoded: Encoded) -> None:
    """The prediction batch size that fits in memory, found before training with the longest rows."""
    net = model.net.to(ctx.device)
    encoded.batch_size = fitting_batch_size(net, encoded.test_ids + encoded.val_ids, encoded.batch_size,
                                            Feed(encoded.pad_id, ctx.device, ctx.dtype))


def print_banner(ctx: RunContext, inputs: Inputs, data: Data, model: Model) -> None:
    """What is about to happen, before any long step: what it predicts on, the model, rows, steps, device,
    precision, parameters, samples."""
    cfg = ctx.cfg
    steps = (len(data.train_rows) // (cfg.batch_size * ctx.world) + 1) * cfg.epochs
    plan = (f"predict only: {cfg.adapter_from}" if model.trained else
            f"batch {cfg.batch_size} x {ctx.world} process(es) | ~{steps:,} steps over {cfg.epochs} epoch(s)")
    print(f"\n{'=' * 72}\n  {inputs.describe()}\n  model {model_description(model)}\n"
          f"  train rows {len(data.train_rows):,} | validation rows {len(data.val_rows):,} | test rows "
          f"{len(data.test_texts):,}\n  {plan} | device {describe_device(ctx.device, ctx.world)}"
          f"\n  precision {ctx.dtype or 'fp32'} | trainable parameters {model.breakdown['total']:,}", flush=True)
    for i in data.train_rows[:3]:
        print(f"  sample [{LABELS[data.labels[i]]}] {data.texts[i][:110]}")
    print("=" * 72, flush=True)


# ------------------------------------------------------ publishing the outputs, and keeping the adapter
def keep_adapter(model: Model, scratch: Path, out: Path) -> Path:
    """The trained adapter saved into the output folder before predicting, so that no later failure loses the
    training (its temperature is not fitted yet: a predict-only run fits it). An earlier run's outputs there go
    first: beside this run's adapter they would pass for its own. An output folder that cannot take it stops the
    run, the adapter kept elsewhere if it can be (adapter_elsewhere)."""
    save_adapter(model, scratch / "adapter", None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_NAMES[:-1]:
            remove_output(out / name)
        publish_file(scratch / "adapter", out / "adapter")
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise PublishError(f"cannot keep the trained adapter in {out}: {exc.strerror or exc}{where}; "
                           + adapter_elsewhere(scratch / "adapter")) from None
    print(f"saved the trained adapter to {out / 'adapter'} before predicting", flush=True)
    return out / "adapter"


def adapter_elsewhere(adapter: Path) -> str:
    """The trained adapter moved out of the run's temporary folder, which goes with the run, into a folder of its own
    beside it (a rename: no room needed); what became of it, as the end of the error. On Kaggle only the working
    folder outlives the session, so there it is plainly lost."""
    if on_kaggle():
        return (f"on Kaggle nothing but {KAGGLE_WORKING} outlives the session, so the trained adapter could not be "
                "kept: fix the output folder (free space in it) and run again")
    try:
        kept = Path(tempfile.mkdtemp(prefix="agnews_lora_adapter_", dir=adapter.parent.parent)) / "adapter"
        os.replace(adapter, kept)
    except OSError as exc:
        return f"the trained adapter could not be kept elsewhere either ({exc.strerror or exc}): it is lost"
    return f"the trained adapter is kept in {kept} instead: predict with it using --set adapter_from={kept}"


def failed_after_training(exc: Exception, adapter: Path | None) -> KernelError:
    """A failure while predicting or writing, as one line that says where the trained adapter is kept and how to
    predict with it: exit 5 (non-finite predictions stay 4, a second signal 128 + N; a predict-only run's own
    errors are unchanged)."""
    text = f"cannot write the outputs: {exc.strerror or exc} ({exc.filename})" if isinstance(exc, OSError) else str(exc)
    if adapter is None:
        return exc if isinstance(exc, KernelError) else PublishError(text)
    note = (f"; the trained adapter is kept in {adapter}: predict with it using --set adapter_from={adapter} "
            "(lorakit push --predict-from N)")
    if isinstance(exc, Interrupted):
        return Interrupted(f"{exc.signame} again: stopped at once, no submission written{note}", exc.signame)
    return (DivergedError if isinstance(exc, DivergedError) else PublishError)(text + note)


def save_adapter(model: Model, folder: Path, temperature: float | None) -> None:
    """The LoRA adapter (PEFT format), the head's weights and what reloading needs, in `folder`."""
    folder.mkdir(parents=True)
    model.net.encoder.save_pretrained(str(folder))
    torch.save(model.net.head.state_dict(), folder / "head.pt")
    if model.generated:  # an encoder generated for this run (random weights): keep it and its tokenizer to reload
        copy_tree(Path(model.source), folder / "base")
    write_json(folder / "kit.json", kit_of(model, temperature))


def kit_of(model: Model, temperature: float | None) -> dict:
    """An adapter's kit.json: the config it was trained with, its temperature and the encoder's width."""
    return {"config": dataclasses.asdict(model.config), "temperature": temperature,
            "hidden_size": model.net.encoder.get_base_model().config.hidden_size}


def adapter_kit(folder: Path) -> dict:
    """An adapter's kit.json, checked to be what save_adapter writes: its config, temperature and hidden size."""
    path = folder / "kit.json"
    try:
        kit = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} ({type(exc).__name__}); point adapter_from at a previous run's "
                          "adapter/") from None
    shape = {"config": dict, "temperature": (int, float, type(None)), "hidden_size": int}
    if not isinstance(kit, dict) or any(not isinstance(kit.get(k, ...), t) for k, t in shape.items()):
        raise ConfigError(f"{path} is not a kit.json this kernel wrote: it needs config (an object), temperature "
                          "(a number) and hidden_size (an integer)")
    return kit


def adapter_digest(folder: Path) -> str:
    """sha256 over an adapter folder's files (relative names and contents, hidden files aside): the
    identity lorakit pins with adapter_sha256."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not any(part.startswith(".") for part in rel.split("/")):
            digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def copy_tree(src: Path, dst: Path) -> None:
    """Files and folders copied with fresh modes (the umask's), not the source's: inputs may be read-only."""
    dst.mkdir(parents=True)
    for path in sorted(Path(src).iterdir()):
        if path.is_dir():
            copy_tree(path, dst / path.name)
        else:
            shutil.copyfile(path, dst / path.name)


def publish_file(src: Path, dst: Path) -> None:
    """`src` (a file or folder) as `dst`, atomically: copied beside it under a temporary name, then renamed."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    old = dst.with_name(f".{dst.name}.{os.getpid()}.old")
    try:
        if src.is_dir():
            copy_tree(src, tmp)
            if dst.exists():
                os.replace(dst, old)
            os.replace(tmp, dst)
        else:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    finally:
        for leftover in (tmp, old):
            remove_output(leftover, quiet=True)


def publish(stage: Path, out: Path, adapter_kept: bool = False) -> None:
    """Moves the staged outputs into `out`, submission.csv first; removes outputs of an earlier run that this
    one did not write. A failure after the submission leaves it in place and names what is missing. With
    `adapter_kept` the adapter is already there (keep_adapter): only its kit.json is replaced, and a failure
    leaves it as kept."""
    out.mkdir(parents=True, exist_ok=True)
    publish_file(stage / "submission.csv", out / "submission.csv")
    missing = []
    for name in OUTPUT_NAMES[1:]:
        src, dst = stage / name, out / name
        kept = adapter_kept and name == "adapter"
        if kept:
            src, dst = src / "kit.json", dst / "kit.json"
        try:
            if src.exists():
                publish_file(src, dst)
            else:  # an earlier run's file would pass for this run's
                remove_output(dst)
        except OSError as exc:
            missing.append(f"{name} ({exc.strerror or exc})")
            if not kept:  # an earlier run's, which would pass for this run's; this run's adapter stays
                remove_output(dst, quiet=True)
    if missing:
        raise PublishError(f"published {out / 'submission.csv'}, but not: {', '.join(missing)}")


def remove_output(path: Path, quiet: bool = False) -> None:
    """`path` (a file or folder) gone; with `quiet`, as far as it can go without raising (cleaning up)."""
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=quiet)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        if not quiet:
            raise


# ------------------------------------------------------------------------------------------- smoke mode
def smoke_setup(cfg: Config, scratch: Path) -> Config:
    """smoke=true made ordinary, the one place a run branches on it (its defaults, SMOKE_DEFAULTS, come with the
    config): a synthetic training CSV and test pickle, and a tiny random encoder with its tokenizer, generated in
    `scratch`, and `cfg` pointing at them. Its own train_data and test_data win; a predict-only run keeps the
    encoder its adapter names."""
    if not cfg.smoke:
        return cfg
    train_csv, test_pkl, texts = make_smoke_inputs(scratch, cfg.seed)
    model = cfg.model if cfg.adapter_from else save_smoke_encoder(cfg, smoke_tokenizer(texts), scratch / "base")
    return dataclasses.replace(cfg, model=model, train_data=str(train_csv) if cfg.train_data == "auto" else
                               cfg.train_data, test_data=str(test_pkl) if cfg.test_data == "auto" else cfg.test_data)


SMOKE_NOTICE = "SMOKE RUN: tiny random encoder, synthetic data -- not a submission"
SMOKE_VOCAB = 800
# A tiny random encoder needs a larger step than a pretrained one; explicit overrides still win.
SMOKE_DEFAULTS = {"lr": 5e-3, "epochs": 4, "val_fraction": 0.2, "batch_size": 16, "smoke": True}
SMOKE_ARCH = {  # a tiny RoBERTa; initializer_range 0.2 keeps the first token input-dependent
    "model_type": "roberta", "vocab_size": SMOKE_VOCAB, "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 260, "type_vocab_size": 1,
    "initializer_range": 0.2, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
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


def make_smoke_inputs(folder: Path, seed: int) -> tuple[Path, Path, list[str]]:
    """A synthetic training CSV in the AG News layout and an 8000-row test pickle shaped like the real one, and
    their texts as the run reads them (cleaned), for the tokenizer."""
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
    return train_csv, test_pkl, texts + [clean_text(t) for t in test_texts]


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


def save_smoke_encoder(cfg: Config, tokenizer, folder: Path) -> str:
    """A tiny random RoBERTa and its tokenizer saved in `folder`, so every rank and the adapter reload them."""
    from transformers import AutoModel

    torch.manual_seed(cfg.seed)
    AutoModel.from_config(encoder_config(cfg, len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# ------------------------------------------------------------------------------------------ stop signal
class StopSignal:
    """SIGINT and SIGTERM ask training to stop at its next sync point, so that the best finished epoch still
    predicts; a second signal aborts at once. A marker file carries the request to data-parallel ranks."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)
        self.name = ""  # the first signal's name, once this process received one

    def requested(self) -> bool:
        return bool(self.name) or self.marker.exists()

    @property
    def received(self) -> str:
        """The signal that asked to stop, in this process or another rank; "" when none did."""
        if not self.name and self.marker.exists():
            return self.marker.read_text(encoding="utf-8").strip() or "SIGTERM"
        return self.name

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.name:
            raise Interrupted(f"{name} again: stopped at once, nothing written", name)
        self.name = name
        self.marker.write_text(name, encoding="utf-8")
        print(f"\n{name}: stopping at the next sync point (within {SYNC_STEPS} steps), then predicting with the "
              f"best finished epoch; send it again to stop at once without outputs", file=sys.stderr, flush=True)

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


# ------------------------------------------------------------------------------------- test file reader
# Test pickles are untrusted: nothing in one may run code, crash the kernel, or take its memory or time. A forked
# child with capped memory and time reads the file through an Unpickler that finds only the library classes a table
# of strings is made of. Each arrow array is validated in full as it is built, before anything reads it (and refused
# where arrow's validation lets a negative offset or a validity bitmap of 0 bytes pass, or a chunk that is no array
# would be converted: a string into its letters). The child bounds the rows and text and sends the texts as JSON.
TEST_MAX_FILE_BYTES = 2**30
TEST_MAX_ROWS = 2_000_000
TEST_MAX_TEXT_BYTES = 2**28  # all test texts together: arrow's bytes, characters of Python strings
TEST_LOAD_MEMORY = 2**31  # bytes the reading child may add to its address space, beyond 3 times the file size
TEST_LOAD_SECONDS = 300  # wall-clock seconds the reading child may take
PICKLE_GLOBALS = {  # module: names. What datasets 3-5 and pandas 2-3 write for a table of strings, nothing else
    "builtins": "bytearray slice", "numpy": "ndarray dtype", "numpy.core.multiarray": "_reconstruct scalar",
    "numpy._core.multiarray": "_reconstruct scalar", "numpy.core.numeric": "_frombuffer",
    "numpy._core.numeric": "_frombuffer", "pyarrow.lib": "_reconstruct_table _reconstruct_record_batch "
    "_restore_array chunked_array field py_buffer schema type_for_alias", "datasets.arrow_dataset": "Dataset",
    "datasets.table": "InMemoryTable", "datasets.info": "DatasetInfo", "datasets.features.features": "Features Value",
    "datasets.splits": "NamedSplit", "pandas": "DataFrame Index RangeIndex StringDtype NA",
    "pandas.core.frame": "DataFrame", "pandas.core.internals.managers": "BlockManager",
    "pandas._libs.internals": "_unpickle_block", "pandas._libs.arrays": "__pyx_unpickle_NDArrayBacked",
    "pandas._libs.missing": "NA", "pandas.core.indexes.base": "Index _new_Index",
    "pandas.core.indexes.range": "RangeIndex", "pandas.arrays": "ArrowStringArray StringArray",
    "pandas.core.arrays.string_": "StringArray StringDtype StringArrayNumpySemantics",
    "pandas.core.arrays.string_arrow": "ArrowStringArray ArrowStringArrayNumpySemantics",
}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name not in PICKLE_GLOBALS.get(module, "").split():
            raise pickle.UnpicklingError(f"refused to load {module + '.' + name:.100}: a test file may hold only a "
                                         "datasets Dataset, a pandas DataFrame or a dict of lists")
        checked = {"_restore_array": restored_arrow_array, "chunked_array": chunked_arrow_array}
        return checked[name] if module == "pyarrow.lib" and name in checked else super().find_class(module, name)


def restored_arrow_array(data: tuple):
    import pyarrow as pa
    kind, length, _nulls, offset, buffers, children, dictionary = data  # flat, the buffers its type needs
    if (len(buffers) != kind.num_buffers or children != [] or dictionary is not None or min(length, offset) < 0
            or buffers[0] is not None and buffers[0].size * 8 < offset + length):
        raise pickle.UnpicklingError(f"malformed arrow array: not the layout of {length!r:.20} {kind!r:.40}")
    array = pa.lib._restore_array(data)
    try:
        array.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise pickle.UnpicklingError(f"malformed arrow array: {exc}") from None
    return array


def chunked_arrow_array(chunks: list, kind=None):
    import pyarrow as pa
    if not all(isinstance(chunk, pa.Array) for chunk in chunks):
        raise pickle.UnpicklingError("malformed arrow array: a chunk that is no array")
    return pa.chunked_array(chunks, kind)


def load_test_texts(path: Path) -> list[str]:
    """The `text` column of a pickled datasets.Dataset (in memory), DataFrame or dict, in row (ID) order, read by a
    forked child (in this process where the platform cannot fork)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core's deprecation; fork with threads: the child only reads a file
        for module in (*PICKLE_GLOBALS, "resource"):  # an import in the child could wait on another thread's lock
            with suppress(ImportError):
                __import__(module)
        read_end, write_end, pid = *os.pipe(), -1
        with suppress(OSError, AttributeError):  # no fork here, or no process to spare: read in this process
            pid = os.fork()
    if pid == 0:
        _read_in_child(path, write_end)
    os.close(write_end)
    if pid < 0:
        os.close(read_end)
        return read_test_texts(path)
    try:
        with open(read_end, "rb") as pipe:
            reply = pipe.read(8 * TEST_MAX_TEXT_BYTES)
    finally:  # interrupted or not, the child goes
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
    with suppress(ValueError, TypeError, RecursionError):
        kind, payload = json.loads(reply)
        if kind == "error" and isinstance(payload, str):
            raise DataError(payload)
        if kind == "texts" and isinstance(payload, list) and all(isinstance(text, str) for text in payload):
            return payload
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    name = next((s.name for s in signal.Signals if s == signum), f"signal {signum}")
    raise DataError(f"cannot unpickle {path}: " + (
        f"reading it took more than {TEST_LOAD_SECONDS} s, the most a test file may take" if name == "SIGALRM" else
        f"reading it killed the reading process ({name}); the file is malformed or hostile" if signum else
        f"the reading process failed (exit status {os.WEXITSTATUS(status)})"))


def _read_in_child(path: Path, pipe: int) -> None:
    """The forked child: caps its memory and time, reads the file, sends its texts or the one-line error, exits."""
    import resource
    code = 1
    try:
        faulthandler.disable()  # a crash here is one line in the parent, not a dump on any stream
        gc.disable()  # a collection would touch every object the kernel holds, copying its pages into this child
        signal.alarm(TEST_LOAD_SECONDS)  # SIGALRM ends the child, stuck or not
        for fd in (1, 2):  # what libraries print here would pass for the kernel's: the pipe says everything
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with suppress(OSError, ValueError), open("/proc/self/statm", encoding="ascii") as statm:  # ValueError: a
            cap = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + TEST_LOAD_MEMORY  # lower cap is set
            cap += 3 * min(path.stat().st_size, TEST_MAX_FILE_BYTES)
            resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            reply = ["texts", read_test_texts(path)]
        except DataError as exc:
            reply = ["error", str(exc)]
        with open(pipe, "wb") as out:
            out.write(json.dumps(reply, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        code = 0
    finally:
        os._exit(code)


def read_test_texts(path: Path) -> list[str]:
    """load_test_texts' work, in whichever process runs it: the file read whole (bounded), unpickled through the
    allow-list, its 'text' column taken; every failure is one DataError."""
    import io
    try:
        with open(path, "rb") as handle:  # read() of n bytes reserves n first: ask for no more than is there
            data = handle.read(min(os.fstat(handle.fileno()).st_size, TEST_MAX_FILE_BYTES) + 1)
        if not data or len(data) > TEST_MAX_FILE_BYTES:
            raise DataError(f"{path} is " + (f"larger than {TEST_MAX_FILE_BYTES:,} bytes, the most a test file may "
                                             "be" if data else "empty"))
        return text_column(SafeUnpickler(io.BytesIO(data)).load(), path)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path} needs more memory to read than a test file may ({TEST_LOAD_MEMORY >> 20} MiB "
                        "more than 3 times its size)") from None
    except Exception as exc:  # a foreign or hostile pickle fails in many ways; every one is the same user error
        why = (str(exc) if type(exc) is pickle.UnpicklingError else f"{type(exc).__name__}: {exc}").strip()
        raise DataError(f"cannot unpickle {path}: {why.splitlines()[0] if why else ''}") from None


def text_column(obj, path: Path) -> list:
    """The 'text' column of a dict, DataFrame or in-memory Dataset: strings, rows and size bounded (arrow's first)."""
    names, texts = (list(obj), obj.get("text")) if type(obj) is dict else ([], None)
    if isinstance(obj, pd.DataFrame):
        names = [str(name) for name in obj.columns]
        texts = obj.iloc[:, names.index("text")].tolist() if names.count("text") == 1 else None
    elif f"{type(obj).__module__}.{type(obj).__name__}" == "datasets.arrow_dataset.Dataset":
        if obj._indices is not None or obj._format_type is not None or obj._format_columns is not None:
            raise DataError(f"{path} is a Dataset view (select/shuffle/filter, or a format set: {obj._format_type}); "
                            "save dataset.flatten_indices().with_format(None)")
        names = obj._data.table.column_names
        column = obj._data.table.column("text") if names.count("text") == 1 else None
        texts = column if column is None else checked_size(path, column, len(column), column.nbytes).to_pylist()
    elif type(obj) is not dict:
        raise DataError(f"{path} holds a {type(obj).__name__}; expected a datasets.Dataset, a DataFrame or a dict "
                        "with a 'text' column")
    if not isinstance(texts, list) or not texts:
        raise DataError(f"{path} has no rows" if texts == [] else f"{path} has no column 'text' that holds a list "
                        f"(columns: {', '.join(map(str, names[:20])) or 'none'})")
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad} of 'text' is {type(texts[bad]).__name__}, not a string")
    return checked_size(path, texts, len(texts), sum(map(len, texts)))


def checked_size(path: Path, texts, rows: int, size: int):  # `texts`, when within a test file's bounds
    if rows > TEST_MAX_ROWS or size > TEST_MAX_TEXT_BYTES:
        raise DataError(f"{path} holds more than " + (f"{TEST_MAX_ROWS:,} rows" if rows > TEST_MAX_ROWS else
                        f"{TEST_MAX_TEXT_BYTES >> 20} MiB of text (the same texts repeated by reference?)")
                        + ", the most a test file may hold")
    return texts


# ------------------------------------------------------------------------------------------ for lorakit
# The two blocks lorakit writes into a build copy (overrides, push record) are defined here once: their markers
# above, the patterns and readers below. lorakit (src/lorakit/kernel.py) renders them with these patterns.
def _block_pattern(begin: str, name: str, end: str) -> re.Pattern:
    """A marked block that assigns the JSON text in group 1 to `name` as a raw string."""
    return re.compile("^" + re.escape(begin) + f'\n{name} = r"""\n(.*?)\n"""\n' + re.escape(end) + "$", re.S | re.M)


OVERRIDES_RE = _block_pattern(OVERRIDES_BEGIN, "OVERRIDES_JSON", OVERRIDES_END)
PUSH_RECORD_RE = _block_pattern(PUSH_RECORD_BEGIN, "PUSH_RECORD_JSON", PUSH_RECORD_END)


def block_match(pattern: re.Pattern, script_text: str, what: str) -> re.Match:
    match = pattern.search(script_text)
    if not match:
        raise ConfigError(f"the {what} markers are missing or damaged in the kernel script")
    return match


def read_overrides_block(script_text: str) -> dict:
    """The overrides block of a copy of this script (lorakit reads rendered build copies with it)."""
    return overrides_object(block_match(OVERRIDES_RE, script_text, "overrides block").group(1))


def push_record_object(text: str) -> dict:
    """The push record `text` holds: a JSON object of strings, numbers, booleans and nulls, nothing else."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"the push record is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"the push record must be a JSON object, got {type(record).__name__}")
    odd = sorted(k for k, v in record.items() if v is not None and not isinstance(v, (str, int, float, bool)))
    if odd:
        raise ConfigError(f"the push record's {', '.join(odd)} is not a string, number, boolean or null")
    return record


def push_record() -> dict:
    """This copy's push record, for metrics.json ({} when lorakit did not push it). A malformed one is ignored
    with a warning: it is a record of the push, never a reason to stop a run."""
    try:
        return push_record_object(PUSH_RECORD_JSON)
    except ConfigError as exc:
        print(f"warning: {exc}; metrics.json records no push", file=sys.stderr)
        return {}


def read_push_record(script_text: str) -> dict:
    """The push record of a copy of this script; {} for a copy without the block (pushed before it existed)."""
    match = PUSH_RECORD_RE.search(script_text)
    return push_record_object(match.group(1)) if match else {}


# What lorakit (src/lorakit/kernel.py, its one door) uses of this script; a test checks each resolves.
PUBLIC_API = (
    "Config", "CONFIG_KEYS", "HEADS", "HASH_EXCLUDED", "AG_NEWS_DATASET", "KernelError",
    "parse_sets", "apply_overrides", "config_from_overrides", "config_hash", "usable_positions",
    "param_breakdown", "format_breakdown", "budget_warning", "adapter_digest", "validate_submission",
    "OVERRIDES_RE", "PUSH_RECORD_RE", "block_match", "read_overrides_block", "push_record_object",
    "read_push_record",
)
# What bench/ and docs/generate.py reach besides: the training and prediction pieces they time or document.
BENCH_API = (
    "KNOBS", "SMOKE_DEFAULTS", "field_type", "interval_text", "run", "clean_text", "read_ag_news_csv",
    "load_test_texts", "stratified_split", "build_model", "breakdown_of", "model_config", "load_adapter_model",
    "encode_texts", "length_grouped_batches", "sorted_batches", "pad_batch", "to_device", "autocast_dtype",
    "grad_scaler", "make_optimizer", "make_scheduler", "Optimization", "train_step", "trainable_state",
    "load_trainable_state", "Feed", "predict_logits", "fit_temperature", "DataError", "TEST_LOAD_SECONDS",
)


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"config keys: {', '.join(CONFIG_KEYS)}")
    parser.add_argument("--config", metavar="FILE.json", help="a JSON object of config overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable; booleans are true/false)")
    args, unknown = parser.parse_known_args(argv)
    if unknown and on_kaggle():  # Kaggle and Jupyter may pass their own arguments
        print(f"warning: ignoring arguments {' '.join(unknown)}", file=sys.stderr)
    elif unknown:
        close = difflib.get_close_matches(unknown[0].split("=")[0], ["--config", "--set", "--help"], n=1)
        raise ConfigError(f"unknown argument {unknown[0]!r}" + (f"; did you mean {close[0]}?" if close else "")
                          + " (usage: agnews_lora.py [--config FILE.json] [--set KEY=VALUE ...])")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        metrics = run(resolve_config(args.config, args.sets))
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # before the signal handlers are in place: nothing was written yet
        print("error: SIGINT before training started; nothing written", file=sys.stderr)
        return 128 + signal.SIGINT.value
    return 128 + signal.Signals[metrics["signal"]].value if metrics["signal"] else 0


if __name__ == "__main__":
    sys.exit(main())
