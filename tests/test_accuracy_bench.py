"""bench/accuracy.py's pure parts: the generated-row heuristic, the Wilson interval, the seed cleaning, the cache key.

The bench itself trains for an hour on MiniLM and is not part of `make test`; these checks keep it from rotting.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("accuracy_bench_under_test", ROOT / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ generated rows
@pytest.mark.parametrize("text", [
    "Avon Third-Quarter Profit Rises  CHICAGO (Reuters) - Avon Products Inc. said on Tuesday profit rose.",
    "Lions #39; Rogers could miss season Chicago, IL (Sports Network) - Detroit Lions wide receiver Charles "
    "Rogers will likely miss the remainder of the 2004 campaign.",
    "Sony Announces PlayStation Portable price Sony Corp. announced a price of 19,800 yen (\\$186).",
    "Gunners step up gear to top table ARSENAL pulled clear at the top of the English Premiership for the "
    "first time this season after producing a devastating change of gear to sink London rivals Fulham 3-0.",
    "Kerr happy with Irish win Republic of Ireland manager Brian Kerr said he was delighted with the 3-0 win.",
])
def test_ag_news_rows_do_not_look_generated(bench, text):
    assert not bench.looks_generated(text)


@pytest.mark.parametrize("text", [
    "French Women Win Gold Medal at Summer \u201824 Olympics. French team member went one \u201c a final run.",
    "Article 1\nAkamai Technologies announces plans to launch a teleportation technology.",
    "x" * 1012,
    "Google Unveils Revolutionary New Neural Chip Technology. Experts say the AI chip changes everything.",
    "now that his if no been , and have , which . I . of win has him, every of",
    "Meta Health is becoming increasingly popular after January release where major companies collaborate.",
    "Etsy released financial data for the first week in April 2022, indicating a marked decrease in revenues.",
    "A digital virtualized platform combining engineering as teaching units reconsiders use advanced quantum "
    "structures training engineers towards accelerated engineering recovery using recent analysis findings "
    "now combined here - mainly toward solving vast engineering problems with all the units at once again, "
    "while the teaching units keep going.",
])
def test_generated_rows_look_generated(bench, text):
    assert bench.looks_generated(text)


def test_non_ascii_beats_an_ag_marker(bench):
    # A wire tag does not clear a row that also has non-ASCII text or the 1012-character cut.
    assert bench.looks_generated("Z\u00fcrich bank (Reuters) - profit rose")
    assert bench.looks_generated("Bank (Reuters) - " + "profit rose " * 90)


def test_generated_mask_and_distribution(bench):
    mask = bench.generated_mask(["Plain AG style headline Shares rose on Monday.", "caf\u00e9 news"])
    assert mask.dtype == bool and mask.tolist() == [False, True]
    pred = np.array([0, 1, 1, 3])
    assert bench.distribution(pred) == [0.25, 0.5, 0.0, 0.25]
    assert bench.distribution(pred, np.array([False, True, True, False])) == [0.0, 1.0, 0.0, 0.0]
    assert bench.distribution(pred, np.zeros(4, dtype=bool)) == [0.0, 0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------ Wilson
def test_wilson_known_values(bench):
    lo, hi = bench.wilson_interval(81, 100)
    assert lo == pytest.approx(0.7222, abs=1e-4) and hi == pytest.approx(0.8749, abs=1e-4)
    lo, hi = bench.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = bench.wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)


def test_wilson_contains_the_estimate_and_narrows(bench):
    for k, n in ((650, 720), (1, 3), (359, 720)):
        lo, hi = bench.wilson_interval(k, n)
        assert 0 <= lo <= k / n <= hi <= 1
    wide = bench.wilson_interval(45, 50)
    narrow = bench.wilson_interval(900, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert bench.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        bench.wilson_interval(5, 4)
    assert math.isclose(sum(bench.wilson_interval(50, 100)), 1.0)  # symmetric at p = 1/2


# ---------------------------------------------------------------------------------- seed cleaning
@pytest.mark.parametrize("raw, clean", [
    ("Stocks rise (Reuters) - Zurich cafe", "Stocks rise - Zurich cafe"),
    ("Z\u00fcrich caf\u00e9 \u65e5\u672c news", "Zrich caf news"),
    ("a (b (c) d) e", "a e"),
    ("no parens here", "no parens here"),
    ("unbalanced ( stays", "unbalanced ( stays"),
    ("  many \t spaces \n here ", "many spaces here"),
    ("Bush #39;s plan (AP)", "Bush #39;s plan"),  # the seed leaves AG News codes alone
])
def test_seed_clean(bench, raw, clean):
    assert bench.seed_clean(raw) == clean


# -------------------------------------------------------------------------------------- cache key
def test_config_key(bench):
    digest = "ab" * 32
    assert bench.config_key("default", digest, 42, "cpu") == "default-s42-abababababab-cpu"
    assert bench.config_key("augment-0.3", digest, 7, "cuda") == "augment-0.3-s7-abababababab-cuda"
    with pytest.raises(ValueError):
        bench.config_key("bad name", digest, 42, "cpu")
    with pytest.raises(ValueError):
        bench.config_key("default", "not-hex", 42, "cpu")


def test_seed_recipe_hash_tracks_config_not_paths(bench):
    config = {"lora_r": 8, "lr": 2e-4, "output_dir": "/a", "train_data": "/x.csv", "test_data": "/y.pkl"}
    moved = {**config, "output_dir": "/b", "train_data": "/z.csv", "test_data": "/w.pkl"}
    assert bench.seed_recipe_hash(config) == bench.seed_recipe_hash(moved)
    assert bench.seed_recipe_hash(config) != bench.seed_recipe_hash({**config, "lr": 3e-4})


def test_cache_key_follows_the_kernel_config_hash(bench):
    """The kit runs are keyed by the kernel's own config_hash: a changed default re-runs only what changed."""
    kernel = bench.load_kernel()
    base = kernel.config_from_overrides({"model": "m", "val_fraction": 0.2})
    same = kernel.config_from_overrides({"model": "m", "val_fraction": 0.2, "output_dir": "/elsewhere"})
    other = kernel.config_from_overrides({"model": "m", "val_fraction": 0.2, "lr": base.lr * 2})
    key = lambda cfg: bench.config_key("default", kernel.config_hash(cfg), cfg.seed, "cpu")
    assert key(base) == key(same)
    assert key(base) != key(other)


def test_seed_recipe_is_the_issue_s(bench):
    r = bench.SEED_RECIPE
    assert (r["head"], r["lora_targets"], r["lora_r"], r["lora_alpha"], r["lora_dropout"]) == \
        ("roberta", "query", 8, 8.0, 0.2)
    assert (r["lr"], r["batch_size"], r["epochs"], r["max_length"], r["precision"]) == (2e-4, 16, 3, 128, "fp32")
