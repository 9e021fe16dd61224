"""`lorakit check` and `lorakit validate`: the offline checks, with the kernel's own rules."""
from __future__ import annotations

import json

import pytest

from kernel_helpers import BAD_VALUES, ROOT


def test_check_json_reports_the_seed_config(kit):
    code, out, err = kit.run(
        "check", "--set", "head=roberta", "--set", "lora_r=8", "--set", "lora_alpha=8", "--set", "lora_targets=query", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["trainable_params"] == 741124 and data["within_budget"] is True
    assert set(data) >= {"trainable_params", "param_breakdown", "within_budget", "config_hash"}
    assert len(out.strip().splitlines()) == 1
    assert not kit.state.requests


def test_a_count_is_built_once_per_kernel_source_and_config(kit, monkeypatch):
    """check and push in one process (run, a sweep's seeds) share a count; a changed script counts afresh."""
    from lorakit import kernel as seam

    monkeypatch.setattr(seam, "_COUNTS", {})
    kmod, built = kit.kmod(), []
    monkeypatch.setattr(kmod, "build_model", lambda cfg, real=kmod.build_model: built.append(cfg) or real(cfg))
    cfg = kmod.config_from_overrides({"lora_r": 8})
    first = seam.params_counted(kmod, cfg)
    first["total"] = -1  # a caller's copy: the cache keeps its own
    assert seam.params_counted(kmod, cfg) == kmod.param_breakdown(cfg) and len(built) == 2  # the cache, then this
    smaller = seam.params_counted(kmod, kmod.config_from_overrides({"lora_r": 4}))
    assert len(built) == 3 and smaller["total"] < kmod.param_breakdown(cfg)["total"]
    script = kit.repo / "kernel" / "agnews_lora.py"
    script.write_text(script.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    changed = kit.kmod()
    monkeypatch.setattr(changed, "build_model", lambda cfg, real=changed.build_model: built.append(cfg) or real(cfg))
    seam.params_counted(changed, changed.config_from_overrides({"lora_r": 8}))
    assert len(built) == 5  # one more: the changed script is counted afresh


def test_check_rejects_bad_metadata(kit):
    meta_path = kit.repo / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    for change, expected in (
        ({"title": "abc"}, "five characters"),
        ({"code_file": "missing.py"}, "does not exist"),
        ({"language": "julia"}, "'language'"),
        ({"kernel_type": "app"}, "'kernel_type'"),
        ({"enable_gpu": "yes"}, "'enable_gpu' must be true or false"),
        ({"id": "alice/abc"}, "5+ characters"),
    ):
        meta_path.write_text(json.dumps({**meta, **change}))
        code, out, err = kit.run("check")
        assert code == 1 and expected in err, (change, err)
    meta_path.write_text("{not json")
    code, out, err = kit.run("check")
    assert code == 1 and "not valid JSON" in err


def test_check_rejects_a_script_that_does_not_compile(kit):
    script = kit.repo / "kernel" / "agnews_lora.py"
    script.write_text(script.read_text() + "\ndef broken(:\n")
    code, out, err = kit.run("check")
    assert code == 1 and "does not compile" in err


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_lorakit_check_refuses_what_the_kernel_refuses(key, value, message, capsys, monkeypatch):
    from lorakit.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["check", "--set", f"{key}={value}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lorakit: error: invalid config: ") and message in err and len(err.splitlines()) == 1


def test_check_reports_the_length_verdict(capsys, monkeypatch):
    from lorakit.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["check"]) == 0
    assert "lengths    max_length 128, predict_max_length 256 within the 512 usable positions of roberta-base" in \
        capsys.readouterr().out
    assert main(["check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["usable_positions"] == 512


def test_validate_works_outside_a_checkout_and_refuses_float_labels(tmp_path, monkeypatch, capsys):
    from lorakit.cli import main

    monkeypatch.chdir(tmp_path)  # no kernel-metadata.json here or above
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("ID,Label\n0,3\n1,0\n")
    bad.write_text("ID,Label\n0,1.0\n1,2\n")
    assert main(["validate", str(good), "--rows", "2"]) == 0
    assert "valid submission (2 rows" in capsys.readouterr().out
    assert main(["validate", str(bad), "--rows", "2"]) == 1
    assert capsys.readouterr().err.strip() == f"lorakit: error: {bad}: Label must hold integers on every row; " \
                                              "row 0 holds '1.0'"


@pytest.mark.parametrize("sets, rows", [
    (("max_train_samples=600",), 32),  # 4 classes x round(150 x 0.05)
    (("max_train_samples=9000",), 448),  # 4 x round(112.5) = 4 x 112: half to even, as the kernel rounds
    (("val_fraction=0.004",), 480),  # AG News' 120,000 rows
    (("max_train_samples=10000",), None),  # 500: enough
    (("val_fraction=0.05",), None),  # the default: 6,000
    (("smoke=true", "max_train_samples=600"), None),  # synthetic data: its accuracy means nothing anyway
    (("train_data=/kaggle/input/mine/train.csv",), None),  # a file of unknown size
])
def test_check_warns_below_500_validation_rows_naming_val_fraction(kit, sets, rows):
    code, out, err = kit.run("check", *(a for s in sets for a in ("--set", s)))
    assert code == 0, err
    warned = [line for line in err.splitlines() if "validation rows" in line]
    if rows is None:
        assert warned == []
    else:
        (line,) = warned
        assert line.startswith(f"lorakit: warning: these settings leave about {rows} validation rows (val_fraction ")
        assert "fewer than 500" in line and line.endswith("raise val_fraction (or max_train_samples)")


def test_run_and_push_warn_of_too_few_validation_rows_too(kit):
    code, out, err = kit.run("run", "-m", "few", "--set", "max_train_samples=600")
    assert code == 0 and "these settings leave about 32 validation rows (val_fraction 0.05 of the 600 rows of " \
                         "max_train_samples)" in err
