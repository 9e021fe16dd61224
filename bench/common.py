#!/usr/bin/env python3
"""What bench/throughput.py and bench/inference.py share: the kernel as a module, the data, the tokenizer,
the encoder config, the seed recipe's fixed padding, device timing and the JSON output.

Data comes from one of two layouts, told apart by a `manifest.json`:

- ../shared (the default on a developer machine): data/ag_news_sample.csv, data/test_unlabelled.pkl (a
  pickled datasets.Dataset, so reading it needs `datasets`) and tokenizers/roberta-base/ (with config.json);
- a prepared folder written by bench/prepare_data.py (for the GPU machine, which has no `datasets` and no
  ../shared): train.jsonl, test.jsonl and tokenizer/, plain text only.

    python bench/common.py summary throughput.json inference.json   # one table from the two JSON results
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KERNEL_PATH = ROOT / "kernel" / "agnews_lora.py"
SHARED = ROOT.parent / "shared"
MANIFEST = "manifest.json"
if str(ROOT / "src") not in sys.path:  # lorakit's kernel loader, also where lorakit is not installed
    sys.path.insert(0, str(ROOT / "src"))

# The seed recipe (the course's starter notebook): transformers' RobertaForSequenceClassification with PEFT's
# LoraConfig(r=8, lora_alpha=8, target_modules=["query"]) and its classification head trained, every row padded to
# 128 tokens, batch 16, fp32, AdamW. SEED_LORA is that LoRA config in kernel terms (the kit side of throughput.py).
SEED_LORA = {"head": "roberta", "lora_targets": "query", "lora_r": 8, "lora_alpha": 8.0}
SEED_LENGTH = 128
SEED_TRAIN_BATCH = 16
SEED_PREDICT_BATCH = 64

# A tiny encoder for tests (--tiny): the same code paths in a fraction of a second.
TINY_ARCH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

def load_kernel(path: str | Path | None = None):
    """kernel/agnews_lora.py through lorakit's loader (as the module agnews_lora), or another copy of it (a
    variant under test) as agnews_lora_variant, so the two can be compared in one process."""
    from lorakit.kernel import kernel_module_load

    path = Path(path or KERNEL_PATH).resolve()
    return kernel_module_load(path, "agnews_lora" if path == KERNEL_PATH.resolve() else "agnews_lora_variant")


def quiet_libraries() -> None:
    """Expected notices (random weights, unused pooler, tqdm bars) would drown the benchmark's output."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


# ----------------------------------------------------------------------------------------------- data
@dataclass
class DataSource:
    root: Path
    prepared: bool  # a bench/prepare_data.py folder, else the ../shared layout

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / ("tokenizer" if self.prepared else "tokenizers/roberta-base")

    def train(self) -> tuple[list[str], np.ndarray]:
        """AG News sample rows as the kernel reads them (title + " " + description), cleaned, and labels 0-3."""
        kmod = load_kernel()
        if self.prepared:
            rows = read_jsonl(self.root / "train.jsonl")
            texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
        else:
            frame = kmod.read_ag_news_csv(self.root / "data" / "ag_news_sample.csv")
            texts, labels = list(frame["text"]), list(frame["label"])
        return [kmod.clean_text(t) for t in texts], np.asarray(labels, dtype=np.int64)

    def test(self, clean: bool = True) -> list[str]:
        """The competition's test texts in ID order, cleaned as the kernel cleans them (unless clean=False)."""
        kmod = load_kernel()
        if self.prepared:
            texts = [r["text"] for r in read_jsonl(self.root / "test.jsonl")]
        else:
            texts = kmod.load_test_texts(self.root / "data" / "test_unlabelled.pkl")
        return [kmod.clean_text(t) for t in texts] if clean else list(texts)

    def describe(self) -> str:
        return f"{self.root} ({'prepared' if self.prepared else 'shared'} layout)"


def data_source(path: str | None) -> DataSource:
    root = Path(path) if path else SHARED
    if (root / MANIFEST).is_file():
        return DataSource(root.resolve(), True)
    if (root / "data" / "ag_news_sample.csv").is_file():
        return DataSource(root.resolve(), False)
    raise SystemExit(f"error: no benchmark data at {root}: expected ../shared (data/, tokenizers/) or a folder "
                     "written by bench/prepare_data.py (manifest.json, train.jsonl, test.jsonl, tokenizer/)")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def load_tokenizer(source: DataSource):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source.tokenizer_dir))


def encoder_conf(source: DataSource, tiny: bool = False):
    """roberta-base's architecture from the tokenizer folder's config.json (random weights: same FLOPs)."""
    from transformers import AutoConfig

    econf = AutoConfig.from_pretrained(str(source.tokenizer_dir))
    if tiny:
        for key, value in TINY_ARCH.items():
            setattr(econf, key, value)
    return econf


def build(overrides: dict, econf, device: torch.device, seed: int = 0, kmod=None):
    """The kernel's config and model (encoder from `econf`, random weights, LoRA, head) on `device`."""
    kmod = kmod or load_kernel()
    cfg = kmod.config_from_overrides(overrides)
    torch.manual_seed(seed)
    model = kmod.build_model(cfg, econf).to(device)
    return cfg, model


def seed_model(econf, device: torch.device, seed: int = 0):
    """The seed recipe's own model, built as its notebook builds it: transformers' RobertaForSequenceClassification
    (random weights from `econf`, 4 labels) wrapped by PEFT's LoraConfig(r=8, lora_alpha=8, target_modules=["query"]),
    the classification head trained (task_type SEQ_CLS): 741,124 trainable parameters on roberta-base."""
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import RobertaForSequenceClassification

    config = copy.deepcopy(econf)
    config.num_labels = 4
    torch.manual_seed(seed)
    model = RobertaForSequenceClassification(config)
    lora = LoraConfig(r=8, lora_alpha=8, target_modules=["query"], task_type="SEQ_CLS")
    return get_peft_model(model, lora).to(device)


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


# -------------------------------------------------------------------------------------------- seed side
def pad_fixed(seqs: list[list[int]], width: int, pad_id: int, device: torch.device):
    """The seed recipe's padding: every row to `width` tokens (its rows are already truncated to it)."""
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


# ---------------------------------------------------------------------------------------------- device
def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    return torch.device("cuda:0" if name == "cuda" else "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated since the last reset_peak (None on CPU: RSS is process-wide)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device_info(device: torch.device) -> dict:
    info = {"device": device.type, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host_cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2)}  # other work on the machine skews CPU figures
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, device_memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info["device_name"] = f"{cpu_name()} ({torch.get_num_threads()} threads)"
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


class Deadline:
    """A hard time box for the whole run: windows and passes that would overrun it are skipped."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds if seconds > 0 else float("inf")

    def left(self) -> float:
        return self.end - time.monotonic()


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def rnd(value, digits: int = 2):
    return None if value is None else round(float(value), digits)


# ---------------------------------------------------------------------------------------------- output
def emit(result: dict, table: str, as_json: bool, out: str | None) -> None:
    """--json: the JSON object alone on stdout (the table goes to stderr); else the table, then the JSON."""
    text = json.dumps(result, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    if as_json:
        print(table, file=sys.stderr, flush=True)
        print(text, flush=True)
    else:
        print(table + "\n\n" + text, flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(paths: list[str]) -> str:
    """One short table from throughput.json and/or inference.json (gpu.sh prints it at the end)."""
    lines = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            lines.append(f"{path}: missing or unreadable ({exc.__class__.__name__})")
            continue
        lines.append(data.get("table") or json.dumps(data)[:400])
    return "\n\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "summary":
        print(summary(sys.argv[2:]))
    else:
        print(__doc__)
