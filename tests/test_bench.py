"""The benchmark scripts on a tiny encoder and a slice of the real data, so they cannot rot (~15 s).

The figures themselves are not checked (timings on a shared CI machine mean nothing); the output contract
is: the JSON keys the issue names, the seed's fixed padding against the kit's dynamic padding, the prepared
plain-text folder reading the same data as ../shared without `datasets`, and gpu.sh's argument checks.
Tests that need ../shared skip when it is absent.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import fuzz_test_file  # noqa: E402
import inference  # noqa: E402
import prepare_data  # noqa: E402
import throughput  # noqa: E402


@pytest.fixture
def one_thread():
    """A shared CI machine oversubscribed by 2 OpenMP threads makes tiny ops 100x slower: use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    shared = ROOT.parent / "shared"
    if not (shared / "data").is_dir():
        pytest.skip("../shared is absent")
    out = tmp_path_factory.mktemp("benchdata")
    prepare_data.prepare(shared, out)
    return out


def test_spread_order_is_a_permutation_that_mixes_widths():
    batches = [np.arange(i, i + 1) for i in range(50)]  # cost = the index
    order = throughput.spread_order(batches, lambda b: int(b[0]))
    assert sorted(int(b[0]) for b in order) == list(range(50))
    first = [int(b[0]) for b in order[:5]]  # five consecutive batches span the range
    assert max(first) - min(first) >= 30


def test_t4_projection_is_labelled_and_consistent():
    epoch = {"seed_padded_tokens_per_row": 128.0, "kit_padded_tokens_per_row_cuda": 64.0}
    proj = throughput.t4_projection(epoch)
    assert proj["token_factor"] == 2.0 and "not measured" in proj["method"]
    two = proj["by_amp_factor"]["2"]
    assert two["t4_samples_per_second"] == pytest.approx(61.6 * 4, rel=1e-3)
    assert two["t4x2_minutes"] < two["t4_minutes"]


def test_prepared_folder_matches_shared_without_datasets(prepared, monkeypatch):
    shared = common.data_source(None)
    texts, labels = shared.train()
    test_texts = shared.test()
    monkeypatch.setitem(sys.modules, "datasets", None)  # the GPU machine has no `datasets`
    source = common.data_source(str(prepared))
    assert source.prepared
    p_texts, p_labels = source.train()
    assert p_texts == texts and (p_labels == labels).all()
    assert source.test() == test_texts and len(test_texts) == 8000
    assert common.load_tokenizer(source)("Hello world")["input_ids"] == [0, 31414, 232, 2]


@pytest.mark.slow
def test_throughput_contract(prepared, tmp_path, one_thread, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    out = tmp_path / "t.json"
    assert throughput.main(["--device", "cpu", "--data", str(prepared), "--tiny", "--rows", "400",
                            "--window", "0.05", "--repeats", "2", "--warmup-steps", "1", "--json",
                            "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("kit_samples_per_second", "seed_samples_per_second", "ratio", "device",
                "kit_default_samples_per_second", "kit_tokens_per_second", "kit_padding_fraction",
                "seed_padding_fraction", "extrapolated_3_epochs_120k_minutes", "t4_projection"):
        assert key in r, key
    assert r["device"] == "cpu" and r["repeats"] == 2 and len(r["ratios"]) == 2
    assert set(r["sides"]) == {"seed", "kit", "kit_default"}
    assert r["sides"]["seed"]["padded_tokens_per_row"] == 128 and r["sides"]["seed"]["batch_size"] == 16
    assert r["sides"]["kit"]["batch_size"] == 32 and r["sides"]["kit"]["precision"] == "fp32"
    assert r["seed_padding_fraction"] > 0.4 > 0.15 > r["kit_padding_fraction"]
    assert r["sides"]["kit"]["lora"] == r["sides"]["seed"]["lora"] != r["sides"]["kit_default"]["lora"]
    assert r["kit_samples_per_second"] > 0 and r["ratio"] > 0


def test_inference_contract(prepared, tmp_path, one_thread, capsys):
    assert inference.main(["--device", "cpu", "--data", str(prepared), "--tiny", "--rows", "600",
                           "--limit", "256", "--repeats", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)  # --json: stdout holds the JSON object alone
    assert r["rows"] == 256 and r["test_rows"] == 600 and r["seed_max_length"] == 128
    assert {"seed", "kit"} <= set(r["sides"]) and r["sides"]["seed"]["batch_size"] == 64
    # the same truncation and weights: padding alone must not change a prediction
    assert r["sides"].get("kit_128", r["sides"]["kit"])["argmax_agreement_with_seed"] == 1.0
    assert r["kit_padding_fraction"] < r["seed_padding_fraction"]
    assert 0 < r["truncation"]["seed"]["fraction_over"] < 0.2
    assert r["truncation"]["kit"]["max_length"] == r["kit_max_length"]
    assert r["ratio"] > 0 and r["ratio_same_length"] > 0 and "table" in r


def test_gpu_sh_rejects_a_folder_without_manifest(tmp_path):
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")]).returncode == 0
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "prepare_data.py" in proc.stderr


@pytest.mark.slow
def test_damaged_copies_of_the_real_test_file_are_texts_or_one_line(tmp_path):
    """A few cases of bench/fuzz_test_file.py (thousands in bench/RESULTS.md): every damaged copy gives the texts
    with the real file's row count, or one line naming the file; never a traceback."""
    source = ROOT.parent / "shared" / "data" / "test_unlabelled.pkl"
    if not source.is_file():
        pytest.skip("../shared is absent")
    out = tmp_path / "fuzz.json"
    assert fuzz_test_file.main(["--source", str(source), "--cases", "45", "--seed", "7", "--json",
                                "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["failures"] == 0 and sum(r["outcomes"].values()) == 45 and r["source_rows"] == 8000
    assert set(r["by_kind"]) == {"overwrite", "truncate", "insert"}
    assert r["by_kind"]["truncate"] == {"refused": 15}  # a file cut short never passes for a whole one
    assert 0 < r["seconds_per_case"]["median"] and 0 < r["child_peak_rss_mb"]["median"]
