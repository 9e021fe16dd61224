"""Batching and training: length-grouped batches, the guards that stop a run (time limit, a NaN loss), shift options."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kernel_helpers import QUICK, assert_loss_curve, snapshot


def test_length_grouped_batches_cover_every_row_once(kernel):
    lengths = np.random.default_rng(0).integers(5, 120, size=1000)
    batches = kernel.length_grouped_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.1  # grouping keeps padding small
    order = np.concatenate(kernel.sorted_batches(lengths, 64))
    assert (np.diff(lengths[order]) <= 0).all()


@pytest.mark.slow
def test_time_guard_stops_cleanly_and_still_predicts(kernel, run_main, tmp_path):
    code, _, err = run_main("smoke=true", "time_limit_minutes=0.0001", f"output_dir={tmp_path}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and len(metrics["history"]) == 1
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_writes_nothing(kernel, run_main, used_output, monkeypatch):
    before = snapshot(used_output)
    real_step = kernel.train_step
    calls = []

    def nan_on_step_30(*args, **kwargs):  # the hook: the loss of one step turns NaN, as on divergence
        loss = real_step(*args, **kwargs)
        calls.append(1)
        return loss * float("nan") if len(calls) == 30 else loss

    monkeypatch.setattr(kernel, "train_step", nan_on_step_30)
    code, out, err = run_main(*QUICK, f"output_dir={used_output}")
    assert code == 4 and len(calls) == 40  # caught at the next sync point: the epoch's last step, 40 of 40
    assert err.strip().splitlines()[-1] == ("error: training diverged at epoch 1 step 40: non-finite loss or "
                                            "weights (try a lower lr); no submission written")
    assert snapshot(used_output) == before


@pytest.mark.slow
def test_shift_options_run(kernel, run_main, tmp_path):
    code, _, err = run_main("smoke=true", "augment=0.3", "prior_correction=em_uniform", "pseudo_label_rounds=1",
                            "pseudo_label_threshold=0.7", "predict_max_length=64", "epochs=2", "max_train_samples=1600",
                            f"output_dir={tmp_path}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pseudo_label_rows"][0] > 0
    assert metrics["history"][-1]["pseudo_round"] == 1 and len(metrics["history"]) == 3
    assert len(metrics["test_prior_estimate"]) == 4 and abs(sum(metrics["test_prior_estimate"]) - 1) < 1e-3
    kernel.validate_submission(tmp_path / "submission.csv", 8000)


@pytest.mark.slow
def test_the_loss_curve_of_a_smoke_run(kernel, smoke_run):
    """2,400 training rows in batches of 16: 150 steps per epoch, a point at 25, 50, ..., 150 of each of 4 epochs."""
    _, metrics, _, _ = smoke_run
    assert metrics["train_rows"] == 2400 and metrics["config"]["batch_size"] == 16 and len(metrics["history"]) == 4
    assert len(metrics["loss_curve"]) == 4 * 6 <= kernel.LOSS_CURVE_POINTS
    assert_loss_curve(metrics, 150)
    assert metrics["loss_curve"][-1]["loss"] < metrics["loss_curve"][0]["loss"]  # it learns


def test_the_loss_curve_is_bounded_across_rounds(kernel, monkeypatch):
    """A pseudo-label round's points count on from the first round's steps and epochs; at most LOSS_CURVE_POINTS."""
    monkeypatch.setattr(kernel, "LOSS_CURVE_POINTS", 5)
    training = kernel.Training()
    first = {"history": [{"epoch": 1}, {"epoch": 2}], "loss_curve": [
        {"step": s, "epoch": s / 4, "loss": 1.0} for s in (2, 4, 6, 8)], "steps": 8, "train_seconds": 1.0,
        "samples": 80, "tokens": 800, "stopped_early": False}
    training.add(first)
    training.add({**first, "history": [{"epoch": 1}], "loss_curve": [{"step": 3, "epoch": 0.6, "loss": 0.5},
                                                                      {"step": 5, "epoch": 1.0, "loss": 0.4}],
                  "steps": 5}, pseudo_round=1)
    assert len(training.loss_curve) == 5 and training.loss_curve[4:] == [{"step": 11, "epoch": 2.6, "loss": 0.5}]
    assert training.steps == 13 and [h["epoch"] for h in training.history] == [1, 2, 3]


def test_the_schedule_warms_up_from_zero_then_decays_to_zero(kernel):
    """transformers' get_linear_schedule_with_warmup: 10 steps, warmup_ratio 0.2 (2 steps); none without warm-up."""
    import torch

    def rates(ratio):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = kernel.make_scheduler(optimizer, 10, ratio)
        out = []
        for _ in range(10):
            out.append(round(optimizer.param_groups[0]["lr"], 6))
            optimizer.step()
            scheduler.step()
        return out

    assert rates(0.2) == [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    assert rates(0.0) == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
