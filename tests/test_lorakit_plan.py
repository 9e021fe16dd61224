"""`lorakit plan`: the default first, every placement at its largest fitting rank, bench evidence, room left."""
from __future__ import annotations

import json
import shutil

import pytest

from kernel_helpers import ROOT


@pytest.fixture
def plan(capsys, monkeypatch):
    """Runs `lorakit plan ARGS` in this process against the repository: (exit status, stdout, stderr)."""
    from lorakit.cli import main

    monkeypatch.chdir(ROOT)

    def run(*args):
        capsys.readouterr()
        code = main(["plan", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_the_default_comes_first_then_measured_placements_with_exact_counts(kernel, plan):
    code, out, err = plan("--top", "6", "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = data["configs"]
    first, default = rows[0], kernel.Config()
    assert first["default"] is True and not any(r["default"] for r in rows[1:])
    assert (first["head"], first["lora_targets"], first["lora_r"], first["lora_layers"]) == (
        default.head, default.lora_targets, default.lora_r, default.lora_layers)
    assert first["evidence"] and "NVIDIA H200" in first["evidence"]  # the bench measured the default
    measured = [r for r in rows[1:] if r["evidence"]]
    assert measured and rows[1:len(measured) + 1] == measured  # evidence before the unmeasured placements
    assert len(rows) == 6 and all(r["total"] <= 1_000_000 for r in rows)
    for row in rows:  # every printed count is the kernel's exact count of exactly these settings
        cfg = kernel.config_from_overrides(kernel.parse_sets(row["set"].replace("--set ", "").split()))
        assert kernel.param_breakdown(cfg)["total"] == row["total"]
    placements = [(r["head"], r["lora_targets"], r["lora_layers"]) for r in rows]
    assert len(set(placements)) == len(placements)  # one row per placement


def test_each_placement_gets_its_largest_fitting_rank(plan):
    code, out, err = plan("--head", "roberta", "--targets", "query", "--layers", "all", "--json")
    assert code == 0, err
    row = json.loads(out)["configs"][1]
    assert (row["lora_r"], row["total"]) == (16, 888_580)  # r=32 would be 1,183,492
    code, out, err = plan("--head", "roberta", "--targets", "query", "--ranks", "8", "--layers", "all")
    assert code == 0 and "741,124" in out  # the seed recipe's count
    assert "--set head=roberta --set lora_targets=query --set lora_r=8 --set lora_alpha=16 --set lora_layers=all" in out


def test_plan_without_evidence_or_room(plan, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "kernel").mkdir(parents=True)
    shutil.copy2(ROOT / "kernel" / "agnews_lora.py", repo / "kernel")
    shutil.copy2(ROOT / "kernel-metadata.json", repo)
    monkeypatch.chdir(repo)
    code, out, err = plan("--top", "2")
    assert code == 0, err
    assert "evidence: no bench/accuracy_evidence.json in this repository: no evidence marks" in out
    code, out, err = plan("--budget", "1000")
    assert code == 1 and "no configuration fits a budget of 1,000" in err
