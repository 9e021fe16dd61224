#!/usr/bin/env python3
"""The kernel's test-file reader (`load_test_texts`) against damaged copies of the real competition file.

Each case is the real `test_unlabelled.pkl` with one kind of damage, drawn from a seeded generator: random bytes
overwritten (1-16 of them), the file cut short, or random bytes inserted (1-64). Positions are drawn a third of the
time anywhere, a third in the first 33 KB (the pickle's opcodes and arrow's offsets) and a third in the first 800
or the last 400 bytes (the opcodes alone), since most of the file is text where damage only changes a text.

Every case must end in one of two ways: the texts, all strings and as many rows as the real file holds, or one
`DataError` of one line naming the file. Anything else is counted: a traceback (another exception), a wrong row
count, a message of several lines; and the bench itself would die with a crash. Time and the reading child's peak
memory (its maximum resident set, the pages it shares with this process included) are reported per case.

    python bench/fuzz_test_file.py --cases 3000 --json     # ~10 min on 2 cores
    python bench/fuzz_test_file.py --cases 30              # a quick look
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

KINDS = ("overwrite", "truncate", "insert")


def damaged(data: bytes, kind: str, rng: random.Random) -> bytes:
    """`data` with one kind of damage at positions drawn as the module docstring says."""
    def position() -> int:
        region = rng.randrange(3)
        if region == 0:
            return rng.randrange(len(data))
        if region == 1:
            return rng.randrange(min(len(data), 33_000))
        return rng.randrange(800) if rng.random() < 0.5 else len(data) - 1 - rng.randrange(400)

    if kind == "truncate":
        return data[:position()]
    if kind == "insert":
        at = position()
        return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        out[position()] = rng.randrange(256)
    return bytes(out)


class ChildUsage:
    """os.waitpid, recording each reaped child's peak resident memory (os.wait4's rusage), for the time it is set."""

    def __init__(self):
        self.real, self.peaks_mb = os.waitpid, []

    def __call__(self, pid: int, options: int):
        pid, status, usage = os.wait4(pid, options)
        self.peaks_mb.append(usage.ru_maxrss / 1024)  # Linux reports KiB
        return pid, status

    def __enter__(self):
        os.waitpid = self
        return self

    def __exit__(self, *exc):
        os.waitpid = self.real


def outcome(kmod, path: Path, rows: int) -> str:
    """What one case ended in: accepted, refused (with the refusal's kind), or the failure counted against it."""
    try:
        texts = kmod.load_test_texts(path)
    except kmod.DataError as exc:
        message = str(exc)
        if "\n" in message or str(path) not in message:
            return "bad message"
        if "killed the reading process" in message:
            return "refused: the reading child was killed"
        if "took more than" in message or "needs more memory" in message:
            return "refused: over the time or memory cap"
        return "refused"
    except Exception as exc:  # noqa: BLE001 - exactly what the reader must never let through
        return f"traceback ({type(exc).__name__})"
    if len(texts) != rows or not all(isinstance(t, str) for t in texts):
        return "wrong row count"
    return "accepted"


def fuzz(source: Path, cases: int, seed: int, load_seconds: int) -> dict:
    kmod = common.load_kernel()
    kmod.TEST_LOAD_SECONDS = load_seconds  # a case that hangs costs this, not five minutes
    data = source.read_bytes()
    rows = len(kmod.load_test_texts(source))
    rng = random.Random(seed)
    counts, seconds = collections.Counter(), []
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp, ChildUsage() as usage:
        path = Path(tmp) / "test_unlabelled.pkl"
        for case in range(cases):
            kind = KINDS[case % len(KINDS)]
            path.write_bytes(damaged(data, kind, rng))
            started = time.perf_counter()
            counts[(kind, outcome(kmod, path, rows))] += 1
            seconds.append(time.perf_counter() - started)
    by_outcome = collections.Counter()
    for (_kind, result), n in counts.items():
        by_outcome[result] += n
    failures = sum(n for result, n in by_outcome.items() if not result.startswith(("accepted", "refused")))
    return {
        "source": str(source), "source_rows": rows, "cases": cases, "seed": seed, "failures": failures,
        "outcomes": dict(sorted(by_outcome.items())),
        "by_kind": {kind: {r: n for (k, r), n in sorted(counts.items()) if k == kind} for kind in KINDS},
        "seconds_per_case": summary(seconds), "child_peak_rss_mb": summary(usage.peaks_mb),
        "bench_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **common.device_info(common.pick_device("cpu")),
    }


def summary(values: list) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "max": round(float(a.max()), 3)}


def table(r: dict) -> str:
    lines = [f"{r['cases']} damaged copies of {r['source']} ({r['source_rows']} rows), seed {r['seed']}: "
             f"{r['failures']} failures (tracebacks, wrong row counts, messages of several lines)"]
    lines += [f"  {n:>6}  {result}" for result, n in r["outcomes"].items()]
    s, m = r["seconds_per_case"], r["child_peak_rss_mb"]
    lines.append(f"  seconds per case: median {s['median']}, p95 {s['p95']}, max {s['max']}")
    lines.append(f"  reading child's peak RSS (MB, shared pages included): median {m['median']}, p95 {m['p95']}, "
                 f"max {m['max']}; this process's own peak {r['bench_rss_mb']} MB")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(common.SHARED / "data" / "test_unlabelled.pkl"))
    p.add_argument("--cases", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load-seconds", type=int, default=60, help="the reading child's time cap in each case")
    p.add_argument("--json", action="store_true", help="stdout: the JSON object alone (the table to stderr)")
    p.add_argument("--out", help="also write the JSON object to this file")
    args = p.parse_args(argv)
    if not Path(args.source).is_file():
        raise SystemExit(f"error: no test file at {args.source} (../shared/data/test_unlabelled.pkl)")
    result = fuzz(Path(args.source), args.cases, args.seed, args.load_seconds)
    common.emit(result, table(result), args.json, args.out)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
