#!/usr/bin/env python3
"""Convert the benchmark inputs into a plain-text folder for a machine without `datasets` or ../shared.

    python bench/prepare_data.py                     # ../shared -> bench/data (git ignores it)
    python bench/prepare_data.py --shared DIR --out DIR

Writes, in OUT:
- train.jsonl     {"text", "label"} per AG News sample row: text = Title + " " + Description (raw, as the
                  kernel's read_ag_news_csv builds it; the benchmarks clean it as the kernel does), label 0-3;
- test.jsonl      {"text"} per test row, in ID order (raw, from test_unlabelled.pkl, which needs `datasets`);
- tokenizer/      roberta-base's tokenizer files and config.json, copied;
- manifest.json   sources, row counts and sha256 of each file (bench/common.py recognises the folder by it).
About 6 MB in all. bench/gpu.sh DIR reads it; the device tool's `carry` takes it along.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "config.json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(shared: Path, out: Path) -> dict:
    source = common.data_source(str(shared))
    if source.prepared:
        raise SystemExit(f"error: {shared} is already a prepared folder")
    kmod = common.load_kernel()
    out.mkdir(parents=True, exist_ok=True)
    frame = kmod.read_ag_news_csv(shared / "data" / "ag_news_sample.csv")
    n_train = common.write_jsonl(out / "train.jsonl", ({"text": t, "label": int(y)}
                                                        for t, y in zip(frame["text"], frame["label"])))
    n_test = common.write_jsonl(out / "test.jsonl", ({"text": t} for t in source.test(clean=False)))
    tok = out / "tokenizer"
    tok.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source.tokenizer_dir / name, tok / name)
    files = ["train.jsonl", "test.jsonl"] + [f"tokenizer/{n}" for n in TOKENIZER_FILES]
    manifest = {"from": str(shared.resolve()), "train_rows": n_train, "test_rows": n_test,
                "sha256": {f: sha256(out / f) for f in files},
                "bytes": sum((out / f).stat().st_size for f in files)}
    (out / common.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(common.SHARED), help="the ../shared folder (default: beside the repo)")
    p.add_argument("--out", default=str(common.ROOT / "bench" / "data"))
    args = p.parse_args(argv)
    manifest = prepare(Path(args.shared), Path(args.out))
    print(f"wrote {args.out}: {manifest['train_rows']} train rows, {manifest['test_rows']} test rows, "
          f"tokenizer; {manifest['bytes'] / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
