#!/usr/bin/env python3
"""Prediction throughput on the competition's test texts: the kernel's length-sorted dynamic batching
(`predict_logits`: sorted_batches + pad_batch, batch `eval_batch_size`) against the seed recipe's pad-to-128 at
batch 64, same model, same device, same precision (the kernel's autocast_dtype), alternating passes.

Sides: seed (pad every row to 128, batch 64, ID order); kit (the kernel at its own prediction length,
`predict_max_length`, which truncates less); kit_128 (the kernel's batching truncating at 128 like the seed: the
batching alone). Model: roberta-base's architecture with random weights and the kernel's default LoRA + head
(prediction cost hardly depends on the adapter). Texts: test_unlabelled.pkl, cleaned as the kernel cleans them.
It also reports how many test rows exceed each truncation length.

    python bench/inference.py --device cpu --limit 256     # 2 of the full file's 63 kernel batches
    python bench/inference.py --device cuda                # all 8,000 rows
    python bench/inference.py --data bench/data            # a folder from bench/prepare_data.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def seed_predict(model, seqs, pad_id, device, dtype) -> np.ndarray:
    """The seed recipe's prediction: rows in ID order, batch 64, every row padded to 128 tokens."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(seqs), common.SEED_PREDICT_BATCH):
            ids, mask = common.pad_fixed(seqs[i:i + common.SEED_PREDICT_BATCH], common.SEED_LENGTH, pad_id, device)
            with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out.append(model(ids, mask).float().cpu().numpy())
    return np.concatenate(out)


class PadCounter:
    """Counts the real and padded tokens of the batches the kernel's pad_batch builds (a thin wrapper)."""

    def __init__(self, kmod):
        self.kmod, self.inner, self.real, self.padded = kmod, kmod.pad_batch, 0, 0

    def __call__(self, seqs, pad_id, device):
        ids, mask = self.inner(seqs, pad_id, device)
        self.real += sum(len(s) for s in seqs)
        self.padded += ids.numel()
        return ids, mask

    def __enter__(self):
        self.kmod.pad_batch = self
        return self

    def __exit__(self, *exc):
        self.kmod.pad_batch = self.inner


def timed(fn, device) -> tuple[float, np.ndarray]:
    common.sync(device)
    t0 = time.perf_counter()
    out = fn()
    common.sync(device)
    return time.perf_counter() - t0, out


def benchmark(args) -> dict:
    common.quiet_libraries()
    kmod = common.load_kernel()
    device = common.pick_device(args.device)
    deadline = common.Deadline(args.max_seconds)
    t_start = time.perf_counter()
    source = common.data_source(args.data)
    tokenizer = common.load_tokenizer(source)
    raw = source.test(clean=False)
    if args.rows:
        raw = raw[:args.rows]
    texts = [kmod.clean_text(t) for t in raw]
    econf = common.encoder_conf(source, tiny=args.tiny)
    cfg, model = common.build({}, econf, device, seed=args.seed)
    model.eval()
    dtype = kmod.autocast_dtype(device, cfg.precision)
    length = cfg.predict_max_length or cfg.max_length
    batch_size = args.batch_size or cfg.eval_batch_size
    pad_id = tokenizer.pad_token_id

    seed_len = common.SEED_LENGTH
    raw_lengths = np.array([len(s) for s in tokenizer(raw, truncation=False)["input_ids"]])
    full = np.array([len(s) for s in tokenizer(texts, truncation=False)["input_ids"]])  # every test row
    ids = {"kit": kmod.encode_texts(tokenizer, texts, length)}  # the kernel's prediction length
    ids["kit_128"] = ids["seed"] = (ids["kit"] if length == seed_len
                                    else kmod.encode_texts(tokenizer, texts, seed_len))
    lengths = np.array([len(s) for s in ids["kit"]])
    batches = kmod.sorted_batches(lengths, batch_size)  # the kernel's batches over the whole file
    whole = {}
    for name in ("kit", "kit_128"):  # exact padding of a full-file pass (no model call)
        with PadCounter(kmod) as whole[name]:
            lens = np.array([len(s) for s in ids[name]])
            for b in kmod.sorted_batches(lens, batch_size):
                kmod.pad_batch([ids[name][i] for i in b], pad_id, device)
    rows, sample = np.arange(len(texts)), "all rows"
    if args.limit and args.limit < len(texts):
        # A few of the full file's own batches, evenly spaced by width: each keeps the padding it has in a
        # full pass (a random subset would pad worse, its rows being sparser), and together they span the
        # file's length range. Re-sorting their union yields the same batches.
        full_batches = [b for b in batches if len(b) == batch_size]
        k = max(1, min(len(full_batches), round(args.limit / batch_size)))
        chosen = [full_batches[int((j + 0.5) * len(full_batches) / k)] for j in range(k)]
        rows = np.sort(np.concatenate(chosen))
        sample = (f"{len(rows)} rows: {k} of the kernel's {len(batches)} length-sorted batches of the whole "
                  "file, evenly spaced by width")
    seqs = {name: [ids[name][i] for i in rows] for name in ids}
    n = len(rows)

    feed = kmod.Feed(pad_id, device, dtype)
    passes = {  # seed first, then the kit at its own prediction length, then the kit truncating like the seed
        "seed": lambda: seed_predict(model, seqs["seed"], pad_id, device, dtype),
        "kit": lambda: kmod.predict_logits(model, seqs["kit"], batch_size, feed),
    }
    if seqs["kit_128"] != seqs["kit"]:  # skipped when no sampled row is longer than 128 (then identical)
        passes["kit_128"] = lambda: kmod.predict_logits(model, seqs["kit_128"], batch_size, feed)
    warm = slice(0, min(n, 2 * common.SEED_PREDICT_BATCH))  # warm-up: a slice, every path
    seed_predict(model, seqs["seed"][warm], pad_id, device, dtype)
    for name in passes:
        if name != "seed":
            kmod.predict_logits(model, seqs[name][warm], batch_size, feed)
    times = {name: [] for name in passes}
    logits, counters, time_boxed, loads = {}, {}, False, []
    for rep in range(args.repeats):
        if rep > 0 and deadline.left() < sum(t[-1] for t in times.values()):
            time_boxed = True
            common.log(f"time box: stopping after {rep} repeat(s)")
            break
        for name, fn in passes.items():
            with PadCounter(kmod) as counters[name]:
                seconds, logits[name] = timed(fn, device)
            times[name].append(seconds)
        loads.append(round(os.getloadavg()[0], 2))  # >~2.5 on a 2-core machine: other work ran alongside
        common.log(f"repeat {rep + 1}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                   + f"  (load {loads[-1]})")
    repeats = len(times["seed"])
    sides = {}
    for name, secs in times.items():
        real = sum(len(s) for s in seqs[name])
        padded = n * seed_len if name == "seed" else counters[name].padded
        if name == "seed":
            whole_padded, whole_real = len(texts) * seed_len, sum(len(s) for s in ids["seed"])
        else:
            whole_padded, whole_real = whole[name].padded, whole[name].real
        rps = n / common.median(secs)
        sides[name] = {
            "rows_per_second": common.rnd(rps), "seconds": [common.rnd(t, 3) for t in secs],
            "ratio_to_seed": common.rnd(common.median([a / b for a, b in zip(times["seed"], secs)]), 3),
            "ratios_to_seed": [common.rnd(a / b, 3) for a, b in zip(times["seed"], secs)],
            "max_length": seed_len if name != "kit" else length,
            "batch_size": common.SEED_PREDICT_BATCH if name == "seed" else batch_size,
            "padding_fraction": common.rnd(1 - real / padded, 4),
            "real_tokens_per_row": common.rnd(real / n, 2), "padded_tokens_per_row": common.rnd(padded / n, 2),
            "padding_fraction_whole_file": common.rnd(1 - whole_real / whole_padded, 4),
            "padded_tokens_per_row_whole_file": common.rnd(whole_padded / len(texts), 2),
            "whole_file_seconds_extrapolated": common.rnd(len(texts) / rps, 1),
            # With --limit, the sample's padded tokens per row differ from the whole file's; the cost per padded
            # token hardly does: the measured ratio scaled by sample/whole-file padded tokens per row (an estimate).
            "ratio_to_seed_whole_file_estimate": common.rnd(
                common.median([a / b for a, b in zip(times["seed"], secs)])
                * (padded / n) / (whole_padded / len(texts)), 3),
            "argmax_agreement_with_seed": round(float((logits[name].argmax(1) == logits["seed"].argmax(1)).mean()), 4),
        }
    def over(limit, lens=full):
        return {"rows_over": int((lens > limit).sum()), "fraction_over": round(float((lens > limit).mean()), 4),
                "tokens_cut_fraction": round(float(np.maximum(lens - limit, 0).sum() / lens.sum()), 4)}

    result = {
        **common.device_info(device),
        "kit_rows_per_second": sides["kit"]["rows_per_second"], "seed_rows_per_second": sides["seed"]["rows_per_second"],
        "ratio": sides["kit"]["ratio_to_seed"], "ratios": sides["kit"]["ratios_to_seed"],
        "ratio_same_length": sides.get("kit_128", sides["kit"])["ratio_to_seed"],
        "kit_128_note": None if "kit_128" in sides else "no sampled row exceeds 128 tokens: kit_128 = kit",
        "kit_max_length": length, "seed_max_length": seed_len,
        "rows": n, "test_rows": len(texts), "sample": sample,
        "precision": str(dtype or "fp32").replace("torch.", ""),
        "kit_padding_fraction": sides["kit"]["padding_fraction"],
        "seed_padding_fraction": sides["seed"]["padding_fraction"],
        "truncation": {
            "seed": {"max_length": seed_len, **over(seed_len), "fraction_over_raw_text":
                     round(float((raw_lengths > seed_len).mean()), 4)},
            "kit": {"max_length": length, **over(length)},
            "mean_tokens_untruncated": round(float(full.mean()), 2), "p95_tokens": int(np.percentile(full, 95)),
            "max_tokens": int(full.max()),
        },
        "sides": sides,
        "max_abs_logit_diff_kit_128_vs_seed": float(np.abs(logits.get("kit_128", logits["kit"])
                                                           - logits["seed"]).max()),
        "repeats": repeats, "time_boxed": time_boxed, "load_1m_after_each_repeat": loads,
        "model": "tiny roberta (test)" if args.tiny else "roberta-base architecture, random weights, kit default LoRA",
        "data": source.describe(),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]) if args.record_argv else None,
    }
    result["table"] = table(result)
    return result


def table(r: dict) -> str:
    lines = [f"prediction on {r['device_name']} ({r['device']}), {r['sample']}, {r['precision']}, "
             f"{r['repeats']} repeat(s)",
             f"{'side':<9}{'rows/s':>10}{'s/pass':>9}{'padding':>9}{'x seed':>8}  batching"]
    for name, s in r["sides"].items():
        how = (f"pad to {s['max_length']}, batch {s['batch_size']}, ID order" if name == "seed" else
               f"length-sorted dynamic padding, batch {s['batch_size']}, truncate at {s['max_length']}")
        lines.append(f"{name:<9}{s['rows_per_second']:>10.2f}{common.median(s['seconds']):>9.2f}"
                     f"{s['padding_fraction'] * 100:>8.1f}%{s['ratio_to_seed']:>7.2f}x  {how}")
    lines.append(f"kit/seed ratio (median of repeats): {r['ratio']}x {r['ratios']}; same truncation (128): "
                 f"{r['ratio_same_length']}x")
    if r["rows"] < r["test_rows"]:
        lines.append("whole-file estimate (ratio x sample/whole-file padded tokens per row): kit "
                     f"{r['sides']['kit']['ratio_to_seed_whole_file_estimate']}x"
                     + (f", kit_128 {r['sides']['kit_128']['ratio_to_seed_whole_file_estimate']}x"
                        if "kit_128" in r["sides"] else ""))
    tr = r["truncation"]
    lines.append(f"truncation: {tr['seed']['rows_over']} of {r['test_rows']} test rows ({tr['seed']['fraction_over'] * 100:.1f}%; "
                 f"{tr['seed']['fraction_over_raw_text'] * 100:.1f}% before cleaning) exceed {tr['seed']['max_length']} "
                 f"tokens ({tr['seed']['tokens_cut_fraction'] * 100:.1f}% of tokens cut); {tr['kit']['rows_over']} exceed "
                 f"the kit's {tr['kit']['max_length']}; longest {tr['max_tokens']}")
    k = r["sides"]["kit"]
    lines.append(f"kit padded tokens per row: {k['padded_tokens_per_row']} in this sample, "
                 f"{k['padded_tokens_per_row_whole_file']} over the whole file (seed: {r['seed_max_length']})")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--data", help="../shared (default) or a folder written by bench/prepare_data.py")
    p.add_argument("--limit", type=int, default=0,
                   help="about N rows: whole kernel batches of the full file, evenly spaced by width (0 = all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=0, help="the kit's prediction batch (0 = eval_batch_size)")
    p.add_argument("--max-seconds", type=float, default=0, help="hard time box for the repeats (0 = none)")
    p.add_argument("--rows", type=int, default=0, help="treat only the first N test rows as the file (tests)")
    p.add_argument("--tiny", action="store_true", help="a tiny encoder instead of roberta-base (tests)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", action="store_true", help="stdout: the JSON object alone (the table to stderr)")
    p.add_argument("--out", help="also write the JSON object to this file")
    args = p.parse_args(argv)
    args.record_argv = argv is None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    result = benchmark(args)
    common.emit(result, result["table"], args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
