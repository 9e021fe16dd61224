#!/usr/bin/env python3
"""Training throughput: the kernel's training step against the seed recipe, same device, same run.

Model: roberta-base's architecture (config.json beside the tokenizer) with random weights: the FLOPs are
those of the pretrained model. Data: the real AG News sample rows, tokenized with roberta-base's tokenizer.

Three sides, measured in alternating time-boxed windows after a warm-up (seed, kit, kit default; repeated):
- seed:        the seed recipe's own pipeline, nothing of the kernel's: transformers'
               RobertaForSequenceClassification with PEFT's LoraConfig(r=8, lora_alpha=8, target_modules=["query"])
               and its classification head trained (common.seed_model), every row padded to 128 tokens, batch 16,
               fp32, the loss the model computes, torch AdamW, linear decay, gradient clipping 1.0 (HF Trainer's
               defaults).
- kit:         the kernel's own model and pipeline (build_model, length_grouped_batches, pad_batch,
               autocast_dtype, grad_scaler, make_optimizer, make_scheduler, train_step) at its default batch size
               and precision, with the seed's LoRA config (r=8, alpha=8, query, roberta head): the same trainable
               parameters, everything else the kit's.
- kit_default: the same pipeline with the kernel's default config (its own model).

The kit sides step through one epoch of the kernel's own batches in a spread order (sorted by width, then
walked with a golden-ratio stride), so that even a window of a few steps sees the epoch's length mix; the
kernel shuffles batch order anyway, and every order of the same batches costs the same over an epoch.

    python bench/throughput.py --device cpu --json        # ~5 min on 2 cores; one JSON object on stdout
    python bench/throughput.py --device cuda               # larger windows, AMP as the kernel does
    python bench/throughput.py --data bench/data           # a folder from bench/prepare_data.py
    python bench/throughput.py --variant /tmp/k/agnews_lora.py --steps 4   # A/B a changed copy of the kernel
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FULL_ROWS = 120_000  # AG News training rows
EPOCHS = 3
# One T4, fp32, the seed recipe: the peers' figure quoted in issue 4 (the projection's only anchor).
T4_SEED_SAMPLES_PER_SECOND = 61.6
# Assumed speed-up of fp16 autocast over fp32 per padded token on a T4 (tensor cores, 65 vs 8.1 TFLOP/s peak;
# realised gains for BERT-base fine-tuning are commonly 2-3x). An assumption, not a measurement.
T4_AMP_FACTORS = (2.0, 3.0)
T4X2_DDP_EFFICIENCY = 0.9  # assumed: two ranks, <1M trainable parameters all-reduced per step


@dataclass
class Side:
    name: str
    batches: list  # index arrays, visited cyclically
    step: Callable  # batch -> (rows, real tokens, padded tokens)
    batch_size: int
    precision: str
    lora: str
    trainable: int
    model: object
    cost: Callable  # batch -> padded tokens (the warm-up starts with the costliest batch)
    pos: int = 0
    windows: list = field(default_factory=list)
    warmup: dict = field(default_factory=dict)
    peak_mb: float | None = None

    def next_batch(self):
        batch = self.batches[self.pos % len(self.batches)]
        self.pos += 1
        return batch


def spread_order(batches: list, cost: Callable) -> list:
    """The batches sorted by cost, then visited with a golden-ratio stride: any run of k consecutive
    batches samples the whole range of widths, so a short window sees the epoch's average cost."""
    ranked = sorted(range(len(batches)), key=lambda i: cost(batches[i]))
    n = len(ranked)
    stride = max(1, round(n * 0.6180339887))
    while math.gcd(stride, n) != 1:
        stride += 1
    return [batches[ranked[(k * stride) % n]] for k in range(n)]


def run_steps(side: Side, device, seconds: float, min_steps: int, first=None) -> dict:
    """Steps until the step boundary nearest `seconds` (at least `min_steps`); synchronised timing."""
    common.sync(device)
    t0 = time.perf_counter()
    steps = rows = real = padded = 0
    while True:
        batch = first if (first is not None and steps == 0) else side.next_batch()
        r, t, p = side.step(batch)
        steps, rows, real, padded = steps + 1, rows + r, real + t, padded + p
        elapsed = time.perf_counter() - t0
        if steps >= min_steps and elapsed + 0.5 * elapsed / steps >= seconds:
            break
    common.sync(device)
    elapsed = time.perf_counter() - t0
    return {"seconds": round(elapsed, 3), "steps": steps, "rows": rows, "real_tokens": real,
            "padded_tokens": padded, "samples_per_second": rows / elapsed, "tokens_per_second": real / elapsed,
            "load_1m": round(os.getloadavg()[0], 2)}  # >~2.5 on a 2-core machine: other work ran alongside


def make_sides(args, device, source, with_default: bool) -> tuple[list[Side], dict]:
    kmod = common.load_kernel()
    tokenizer = common.load_tokenizer(source)
    texts, labels = source.train()
    if args.rows:
        texts, labels = texts[:args.rows], labels[:args.rows]
    econf = common.encoder_conf(source, tiny=args.tiny)
    pad_id = tokenizer.pad_token_id
    t = time.perf_counter()
    kit_cfg, kit_model = common.build(common.SEED_LORA, econf, device, seed=args.seed)
    seed_model = common.seed_model(econf, device, seed=args.seed)
    common.log(f"built roberta-base ({'tiny' if args.tiny else 'full'}) + seed LoRA, the kernel's model and the "
               f"seed's, in {time.perf_counter() - t:.1f}s")
    ids = kmod.encode_texts(tokenizer, texts, kit_cfg.max_length)  # the kernel's one preprocessing
    lengths = np.array([len(s) for s in ids])
    labels_t = torch.as_tensor(labels)

    # --- seed: its own model, pad to 128, batch 16, fp32, torch AdamW, linear decay, clip 1.0 (HF Trainer defaults)
    from transformers import get_linear_schedule_with_warmup

    seed_ids = tokenizer(list(texts), truncation=True, max_length=common.SEED_LENGTH)["input_ids"]
    seed_params = [p for p in seed_model.parameters() if p.requires_grad]
    seed_opt = torch.optim.AdamW(seed_params, lr=2e-5, weight_decay=0.0)
    seed_sched = get_linear_schedule_with_warmup(seed_opt, 0, 100_000)

    def seed_step(batch):
        seqs = [seed_ids[i] for i in batch]
        ids_t, mask = common.pad_fixed(seqs, common.SEED_LENGTH, pad_id, device)
        loss = seed_model(input_ids=ids_t, attention_mask=mask, labels=labels_t[batch].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(seed_params, 1.0)
        seed_opt.step()
        seed_sched.step()
        seed_opt.zero_grad(set_to_none=True)
        return len(batch), sum(len(s) for s in seqs), ids_t.numel()

    perm = np.random.default_rng(args.seed).permutation(len(ids))
    seed_batches = [perm[i:i + common.SEED_TRAIN_BATCH]
                    for i in range(0, len(perm) - common.SEED_TRAIN_BATCH + 1, common.SEED_TRAIN_BATCH)]
    sides = [Side("seed", seed_batches, seed_step, common.SEED_TRAIN_BATCH, "fp32", "r=8 a=8 query +roberta head",
                  common.trainable_count(seed_model), seed_model,
                  lambda b: len(b) * common.SEED_LENGTH)]

    # --- kit: the kernel's own batching, precision, optimizer, scheduler and step
    def kit_side(name, cfg, model, kmod=kmod):
        dtype = kmod.autocast_dtype(device, cfg.precision)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = kmod.make_optimizer(params, cfg, device)
        opt = kmod.Optimization(optimizer, kmod.make_scheduler(optimizer, 100_000, cfg.warmup_ratio),
                                kmod.grad_scaler(dtype), dtype, cfg.grad_clip)
        batches = kmod.length_grouped_batches(lengths, cfg.batch_size, np.random.default_rng(cfg.seed))
        cost = lambda b: len(b) * int(lengths[b].max())  # noqa: E731
        batches = spread_order(batches, cost)

        def step(batch):
            seqs = [ids[i] for i in batch]
            ids_t, mask = kmod.pad_batch(seqs, pad_id, device)
            if hasattr(kmod, "to_device"):  # a kernel with its own host-to-device copy (a variant under test)
                y = kmod.to_device(torch.as_tensor(labels[batch]), device)
            else:  # as the kernel's train() did before to_device
                y = torch.as_tensor(labels[batch], device=device)
            kmod.train_step(model, ids_t, mask, y, opt)
            return len(batch), sum(len(s) for s in seqs), ids_t.numel()

        lora = f"r={cfg.lora_r} a={cfg.lora_alpha:g} {cfg.lora_targets} +{cfg.head} head"
        return Side(name, batches, step, cfg.batch_size, str(dtype or "fp32").replace("torch.", ""), lora,
                    common.trainable_count(model), model, cost)

    sides.append(kit_side("kit", kit_cfg, kit_model))
    if args.variant:  # another copy of the kernel, e.g. with a speed change, same LoRA config as the kit
        vmod = common.load_kernel(args.variant)
        vcfg, vmodel = common.build(common.SEED_LORA, econf, device, seed=args.seed, kmod=vmod)
        sides.append(kit_side("kit_variant", vcfg, vmodel, vmod))
    if with_default:
        t = time.perf_counter()
        default_cfg, default_model = common.build({}, econf, device, seed=args.seed)
        common.log(f"built the kit-default model in {time.perf_counter() - t:.1f}s")
        sides.append(kit_side("kit_default", default_cfg, default_model))
    epoch = epoch_padding(kmod, lengths, kit_cfg)
    return sides, {"rows": len(ids), "mean_tokens": float(lengths.mean()), "epoch_padding": epoch}


def epoch_padding(kmod, lengths: np.ndarray, cfg) -> dict:
    """Exact padded tokens per row over one epoch of the kernel's batches (widths as pad_batch sets them:
    the batch's longest row, rounded up to 8 on GPU), against the seed's 128."""
    batches = kmod.length_grouped_batches(lengths, cfg.batch_size, np.random.default_rng(cfg.seed))
    real = float(lengths.sum())
    out = {"real_tokens_per_row": real / len(lengths), "seed_padded_tokens_per_row": float(common.SEED_LENGTH)}
    for kind, round_to in (("cpu", 1), ("cuda", 8)):
        padded = sum(len(b) * (-(-int(lengths[b].max()) // round_to) * round_to) for b in batches)
        out[f"kit_padded_tokens_per_row_{kind}"] = padded / len(lengths)
        out[f"kit_padding_fraction_{kind}"] = 1 - real / padded
    out["seed_padding_fraction"] = 1 - real / (common.SEED_LENGTH * len(lengths))
    return {k: round(v, 4) for k, v in out.items()}


def t4_projection(epoch: dict) -> dict:
    """3 epochs of 120k rows on Kaggle's T4s, projected (not measured): the peers' seed figure on one T4
    (61.6 rows/s, fp32, 128 tokens a row) scaled by the kit's fewer padded tokens per row (exact, from the
    kernel's batches with GPU rounding) and by an assumed fp16 autocast gain; two T4s at an assumed DDP
    efficiency. Attention's quadratic saving and the larger batch are left out (both favour the kit)."""
    token_factor = epoch["seed_padded_tokens_per_row"] / epoch["kit_padded_tokens_per_row_cuda"]
    rows = FULL_ROWS * EPOCHS
    out = {"method": t4_projection.__doc__.replace("\n    ", " "), "token_factor": round(token_factor, 3),
           "t4_seed_samples_per_second_peer": T4_SEED_SAMPLES_PER_SECOND,
           "seed_minutes_t4": round(rows / T4_SEED_SAMPLES_PER_SECOND / 60, 1), "by_amp_factor": {}}
    for amp in T4_AMP_FACTORS:
        one = T4_SEED_SAMPLES_PER_SECOND * token_factor * amp
        two = one * 2 * T4X2_DDP_EFFICIENCY
        out["by_amp_factor"][f"{amp:g}"] = {"t4_samples_per_second": round(one, 1),
                                            "t4_minutes": round(rows / one / 60, 1),
                                            "t4x2_minutes": round(rows / two / 60, 1)}
    base = T4_SEED_SAMPLES_PER_SECOND * token_factor
    out["amp_factor_needed_for_25min_t4"] = round(rows / (25 * 60) / base, 2)
    out["amp_factor_needed_for_15min_t4x2"] = round(rows / (15 * 60) / (base * 2 * T4X2_DDP_EFFICIENCY), 2)
    return out


def summarise(side: Side, repeats: int, other_bytes: int, device) -> dict:
    wins = side.windows[:repeats]
    real = sum(w["real_tokens"] for w in wins)
    padded = sum(w["padded_tokens"] for w in wins)
    rows = sum(w["rows"] for w in wins)
    sps = common.median(w["samples_per_second"] for w in wins)
    seconds = sum(w["seconds"] for w in wins)
    peak = None if side.peak_mb is None else side.peak_mb - other_bytes / 2**20
    return {
        "samples_per_second": common.rnd(sps),
        "samples_per_second_pooled": common.rnd(rows / seconds) if seconds else None,
        "tokens_per_second": common.rnd(common.median(
            w["tokens_per_second"] for w in wins), 1),
        "padding_fraction": common.rnd(1 - real / padded, 4) if padded else None,
        "padded_tokens_per_row": common.rnd(padded / rows, 2) if rows else None,
        "real_tokens_per_row": common.rnd(real / rows, 2) if rows else None,
        "peak_memory_mb": common.rnd(peak, 1),
        "batch_size": side.batch_size, "precision": side.precision, "lora": side.lora,
        "trainable_params": side.trainable,
        "epoch3_120k_minutes": common.rnd(FULL_ROWS * EPOCHS / sps / 60, 1) if sps else None,
        "windows": [{k: common.rnd(v, 3) if isinstance(v, float) else v for k, v in w.items()} for w in wins],
        "warmup": side.warmup,
    }


def benchmark(args) -> dict:
    common.quiet_libraries()
    device = common.pick_device(args.device)
    cuda = device.type == "cuda"
    window = args.window or (15.0 if cuda else 25.0)
    warmup_seconds = args.warmup if args.warmup is not None else (8.0 if cuda else 0.0)
    warmup_steps = args.warmup_steps if args.warmup_steps is not None else (5 if cuda else 1)
    deadline = common.Deadline(args.max_seconds)
    t_start = time.perf_counter()
    source = common.data_source(args.data)
    sides, data_info = make_sides(args, device, source, with_default=not args.no_default)
    for side in sides:  # warm-up; the kit's widest batch goes first so the peak memory is the worst case
        side.model.train()
        common.reset_peak(device)
        widest = max(side.batches, key=side.cost)
        side.warmup = run_steps(side, device, warmup_seconds, warmup_steps, first=widest)
        side.warmup = {"seconds": side.warmup["seconds"], "steps": side.warmup["steps"]}
        side.peak_mb = common.peak_mb(device)
        common.log(f"warm-up {side.name}: {side.warmup['steps']} steps in {side.warmup['seconds']:.1f}s")
    time_boxed = False
    kit_sides = [s for s in sides if s.name != "seed"]  # same batches (same rows, batch size and seed)
    for rep in range(args.repeats):
        start = max(s.pos for s in kit_sides)  # each repeat, every kit side starts at the same batch: paired
        for s in kit_sides:
            s.pos = start
        need = sum(window + (s.windows[-1]["seconds"] / s.windows[-1]["steps"] if s.windows else window)
                   for s in sides)
        if rep > 0 and deadline.left() < need:
            time_boxed = True
            common.log(f"time box: stopping after {rep} repeat(s) ({deadline.left():.0f}s left, ~{need:.0f}s needed)")
            break
        for side in sides:
            side.model.train()
            common.reset_peak(device)
            if args.steps and side.name != "seed":  # fixed steps: paired kit sides run the very same batches
                side.windows.append(run_steps(side, device, 0.0, args.steps))
            else:
                side.windows.append(run_steps(side, device, window, 1))
            peak = common.peak_mb(device)
            side.peak_mb = max(side.peak_mb or 0.0, peak) if peak is not None else None
            w = side.windows[-1]
            common.log(f"repeat {rep + 1} {side.name:<11} {w['samples_per_second']:8.2f} rows/s  "
                       f"{w['steps']} steps in {w['seconds']:.1f}s")
    repeats = min(len(s.windows) for s in sides)
    by_name = {s.name: s for s in sides}
    models = {id(s.model): s.model for s in sides}
    out_sides = {}
    for side in sides:
        other = sum(common.model_bytes(m) for key, m in models.items() if key != id(side.model))
        out_sides[side.name] = summarise(side, repeats, other, device)
    seed = by_name["seed"].windows
    ratios = [k["samples_per_second"] / s["samples_per_second"] for k, s in zip(by_name["kit"].windows, seed)]
    result = {
        **common.device_info(device),
        "kit_samples_per_second": out_sides["kit"]["samples_per_second"],
        "seed_samples_per_second": out_sides["seed"]["samples_per_second"],
        "ratio": common.rnd(common.median(ratios[:repeats]), 3),
        "ratios": [common.rnd(r, 3) for r in ratios[:repeats]],
        "ratio_pooled": common.rnd(out_sides["kit"]["samples_per_second_pooled"]
                                   / out_sides["seed"]["samples_per_second_pooled"], 3),
    }
    # The windows' batches pad to a little more or less than a whole epoch's; the cost per padded token hardly
    # depends on the mix, so the pooled ratio scaled by windows/epoch padded tokens per row is the epoch's.
    epoch_width = data_info["epoch_padding"][f"kit_padded_tokens_per_row_{device.type}"]
    window_width = out_sides["kit"]["padded_tokens_per_row"]
    result["ratio_epoch_mix_estimate"] = common.rnd(result["ratio_pooled"] * window_width / epoch_width, 3)
    if "kit_default" in by_name:
        dratios = [k["samples_per_second"] / s["samples_per_second"]
                   for k, s in zip(by_name["kit_default"].windows, seed)]
        result["kit_default_samples_per_second"] = out_sides["kit_default"]["samples_per_second"]
        result["kit_default_ratio"] = common.rnd(common.median(dratios[:repeats]), 3)
    if "kit_variant" in by_name:
        vwins = by_name["kit_variant"].windows
        result["kit_variant_samples_per_second"] = out_sides["kit_variant"]["samples_per_second"]
        result["kit_variant_ratio"] = common.rnd(common.median(
            [v["samples_per_second"] / s["samples_per_second"] for v, s in zip(vwins, seed)][:repeats]), 3)
        result["variant_gain"] = common.rnd(common.median(
            [v["samples_per_second"] / k["samples_per_second"]
             for v, k in zip(vwins, by_name["kit"].windows)][:repeats]), 3)
        result["variant"] = str(args.variant)
    result.update({
        "kit_tokens_per_second": out_sides["kit"]["tokens_per_second"],
        "seed_tokens_per_second": out_sides["seed"]["tokens_per_second"],
        "kit_padding_fraction": out_sides["kit"]["padding_fraction"],
        "seed_padding_fraction": out_sides["seed"]["padding_fraction"],
        "kit_peak_memory_mb": out_sides["kit"]["peak_memory_mb"],
        "seed_peak_memory_mb": out_sides["seed"]["peak_memory_mb"],
        "peak_rss_mb": common.rnd(common.rss_peak_mb(), 0),
        "extrapolated_3_epochs_120k_minutes": {k: v["epoch3_120k_minutes"] for k, v in out_sides.items()},
        "extrapolation_method": (f"{EPOCHS} x {FULL_ROWS:,} rows / the median samples/s measured here, on this "
                                 "device; assumes the full training set's length mix matches the sample's"),
        "repeats": repeats, "window_seconds": window, "kit_steps_per_window": args.steps or None,
        "time_boxed": time_boxed,
        "max_load_1m_during_windows": max(w["load_1m"] for s in sides for w in s.windows[:repeats]),
        "model": "tiny roberta (test)" if args.tiny else "roberta-base architecture, random weights",
        "data": source.describe(), "data_rows": data_info["rows"], "mean_tokens_per_row": round(
            data_info["mean_tokens"], 2), "epoch_padding": data_info["epoch_padding"],
        "t4_projection": t4_projection(data_info["epoch_padding"]),
        "sides": out_sides,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]) if args.record_argv else None,
    })
    result["table"] = table(result)
    return result


def table(r: dict) -> str:
    head = (f"training throughput on {r['device_name']} ({r['device']}), {r['repeats']} repeat(s) x "
            f"{r['window_seconds']:g}s windows, {r['model']}")
    rows = [head, f"{'side':<12}{'rows/s':>9}{'tokens/s':>10}{'padding':>9}{'peak MB':>9}{'3x120k min':>11}"
                  f"  batch precision lora"]
    for name, s in r["sides"].items():
        peak = f"{s['peak_memory_mb']:.0f}" if s["peak_memory_mb"] is not None else "-"
        rows.append(f"{name:<12}{s['samples_per_second'] or 0:>9.2f}{s['tokens_per_second'] or 0:>10.1f}"
                    f"{(s['padding_fraction'] or 0) * 100:>8.1f}%{peak:>9}{s['epoch3_120k_minutes'] or 0:>11.1f}"
                    f"  {s['batch_size']:>5} {s['precision']:<9} {s['lora']}")
    line = (f"kit/seed ratio (median of repeats): {r['ratio']}x  {r['ratios']}; pooled {r['ratio_pooled']}x; "
            f"epoch-mix estimate {r['ratio_epoch_mix_estimate']}x")
    if "kit_default_ratio" in r:
        line += f"; kit default/seed: {r['kit_default_ratio']}x"
    if "variant_gain" in r:
        line += f"; variant/kit: {r['variant_gain']}x (variant/seed {r['kit_variant_ratio']}x)"
    rows.append(line)
    t4 = r["t4_projection"]
    amps = ", ".join(f"amp {k}x: {v['t4_minutes']} min T4, {v['t4x2_minutes']} min T4x2"
                     for k, v in t4["by_amp_factor"].items())
    rows.append(f"T4 projection (not measured; token factor {t4['token_factor']}x): {amps}")
    return "\n".join(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--data", help="../shared (default) or a folder written by bench/prepare_data.py")
    p.add_argument("--window", type=float, default=None, help="seconds per side and repeat (cpu 25, cuda 15)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=0,
                   help="kit sides: N steps per window instead of a time box (an exact A/B with --variant)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per side (cpu 0, cuda 8)")
    p.add_argument("--warmup-steps", type=int, default=None, help="minimum warm-up steps (cpu 1, cuda 5)")
    p.add_argument("--max-seconds", type=float, default=0, help="hard time box for the repeats (0 = none)")
    p.add_argument("--no-default", action="store_true", help="skip the kit-default row")
    p.add_argument("--variant", help="another copy of the kernel script: adds a kit_variant row (A/B a change)")
    p.add_argument("--rows", type=int, default=0, help="use only the first N sample rows (tests)")
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
