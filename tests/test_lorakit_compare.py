"""`lorakit compare A B`: config diff, metrics diff, the exact McNemar test on the shared validation slice and
test-set agreement, for two pulled versions or two submission CSV paths; and the statistics behind it."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from lorakit.stats import accuracy_interval, holm, mcnemar_exact
from lorakit_fixtures import error_line, fake_logits, one_document, push, push_pull, versions


# ------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("b, c", [(0, 0), (1, 0), (5, 5), (41, 22), (30, 12), (14, 12), (0, 25), (300, 260)])
def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_rows(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


@pytest.mark.parametrize("right, rows", [(1800, 2000), (161, 161), (0, 50), (37, 161), (9000, 10000)])
def test_accuracy_interval_is_wilsons(right, rows):
    """The interval versions and compare show, against scipy's Wilson interval (a Wald interval differs)."""
    reference = binomtest(right, rows).proportion_ci(confidence_level=0.95, method="wilson")
    assert accuracy_interval(right / rows, rows) == pytest.approx((reference.low, reference.high), abs=1e-9)


def test_mcnemar_exact_known_values_and_bad_counts():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == 2 / 32  # five discordant rows all one way: 2 * (1/2)^5
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_holm_against_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.04 becomes 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


# ---------------------------------------------------------------------------------------------- helpers
ROWS = 200


def discordant(both: int, a_only: int, b_only: int) -> tuple:
    """Which of ROWS validation rows A and B get right: ``both`` by both, ``a_only`` by A alone, ``b_only`` by
    B alone, the rest by neither."""
    a, b = np.zeros(ROWS, dtype=bool), np.zeros(ROWS, dtype=bool)
    a[:both + a_only] = True
    b[:both] = True
    b[both + a_only:both + a_only + b_only] = True
    return a, b


def write_validation(kit, version: int, correct, order=None) -> None:
    """Replace v<version>'s logits.npz with a hand-made validation slice (rows in ``order``), its digest the
    kernel's (val_ids_sha256 of the ids and labels in the file's order) and metrics.json's val_rows its rows:
    lorakit checks both."""
    order = np.arange(ROWS) if order is None else order
    ids = np.arange(1000, 1000 + ROWS, dtype=np.int64)[order]
    labels = (ids % 4).astype(np.int64)
    sha = hashlib.sha256(ids.tobytes() + labels.tobytes()).hexdigest()
    folder = kit.repo / "submissions" / f"v{version}"
    np.savez(folder / "logits.npz", val_logits=fake_logits(labels, correct[order]), val_labels=labels, val_ids=ids,
             val_ids_sha256=np.array(sha))
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "val_rows": ROWS}))  # as the file says: checked


def two_hand_made(kit, both: int, a_only: int, b_only: int) -> None:
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    right_a, right_b = discordant(both, a_only, b_only)
    write_validation(kit, 1, right_a)
    write_validation(kit, 2, right_b, order=np.random.default_rng(3).permutation(ROWS))  # paired by id, not position


def exact_p(b: int, c: int) -> float:
    """The two-sided exact binomial p-value of b successes in b + c fair coin flips, by hand."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n)


# ------------------------------------------------------------------------------------------ two versions
def test_compare_json_p_value_is_the_hand_computed_exact_one_and_says_who_wins(kit):
    two_hand_made(kit, both=150, a_only=30, b_only=12)
    code, out, err = kit.run("compare", 1, 2, "--json")
    assert code == 0, err
    data = one_document(out)
    paired = data["paired"]
    assert (paired["rows"], paired["a_wins"], paired["b_wins"]) == (ROWS, 30, 12)
    assert paired["p_value"] == pytest.approx(exact_p(30, 12), rel=1e-12) and paired["p_value"] < 0.05
    assert paired["verdict"] == f"v1 beats v2 on 30 rows and loses on 12: p = {exact_p(30, 12):.2g}"
    assert data["paired_reason"] is None and data["a"]["comparable"] and data["b"]["comparable"]

    code, out, err = kit.run("compare", "v2", "v1")  # the text says the same, from B's side
    assert code == 0, err
    assert ("on the 200 shared validation rows (exact McNemar): v2 right and v1 wrong 12, "
            "v1 right and v2 wrong 30") in out
    assert f"verdict: v1 beats v2 on 30 rows and loses on 12: p = {exact_p(30, 12):.2g}" in out


def test_compare_says_indistinguishable_when_the_difference_is_noise(kit):
    two_hand_made(kit, both=160, a_only=14, b_only=12)
    code, out, err = kit.run("compare", 1, 2, "--json")
    assert code == 0, err
    paired = one_document(out)["paired"]
    assert (paired["a_wins"], paired["b_wins"]) == (14, 12)
    assert paired["p_value"] == pytest.approx(exact_p(14, 12), rel=1e-12) and paired["p_value"] > 0.5
    assert paired["verdict"] == f"indistinguishable: v1 wins 14 rows and v2 wins 12: p = {exact_p(14, 12):.2g}"
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0 and "verdict: indistinguishable: v1 wins 14 rows and v2 wins 12" in out


def test_compare_shows_the_config_diff_and_the_metrics_diff(kit):
    kit.accuracy = lambda cfg, number: 0.9 if number == 1 else 0.95
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8", "--set", "lr=0.001")
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["config v1 -> v2:", "  lora_r: 4 -> 8", "  lr: 0.0005 -> 0.001"]
    metrics = [json.loads((kit.repo / "submissions" / f"v{v}" / "metrics.json").read_text()) for v in (1, 2)]
    low, high = accuracy_interval(0.9, 2000)
    row = next(line for line in lines if line.startswith("val accuracy [95%]")).split()
    assert row[3:6] == ["0.9000", f"[{low:.4f},", f"{high:.4f}]"] and row[-1] == "+0.0500"
    assert next(line for line in lines if line.startswith("val rows")).split()[2:] == ["2,000", "2,000", "+0"]
    recall = next(line for line in lines if line.startswith("recall Sports")).split()
    sports = [m["per_class_val_accuracy"]["Sports"] for m in metrics]
    assert recall[2:] == [f"{sports[0]:.4f}", f"{sports[1]:.4f}", f"{sports[1] - sports[0]:+.4f}"]
    params = [m["trainable_params"] for m in metrics]
    assert next(line for line in lines if line.startswith("trainable params")).split()[2:] == [
        f"{params[0]:,}", f"{params[1]:,}", f"{params[1] - params[0]:+,}"]
    assert next(line for line in lines if line.startswith("train minutes")).split()[2:] == ["20.0", "20.0", "+0.0"]
    assert next(line for line in lines if line.startswith("device")).split()[1:] == ["cuda:0", "(Tesla", "T4)"] * 2
    assert "paired test on the 2000 shared validation rows" in out and "test set: v1 vs v2: 8,000 rows" in out

    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["config_diff"] == {"lora_r": [4, 8], "lr": [0.0005, 0.001]}
    assert data["a"]["val_interval"] == pytest.approx([low, high]) and data["b"]["val_accuracy"] == 0.95
    assert data["b"]["per_class_recall"] == metrics[1]["per_class_val_accuracy"]
    assert (data["a"]["train_minutes"], data["a"]["trainable_params"]) == (20.0, params[0])
    assert data["test"]["agreement"] == 1.0 and data["test"]["rows"] == 8000 and data["where_diff"] == {}

    path = kit.repo / "submissions" / "v2" / "metrics.json"  # where a run wrote is not what it ran
    path.write_text(json.dumps({**metrics[1], "config": {**metrics[1]["config"], "output_dir": "/kaggle/working"}}))
    code, out, err = kit.run("compare", 1, 2)
    assert out.splitlines()[1:4] == ["  lora_r: 4 -> 8", "  lr: 0.0005 -> 0.001",
                                     "  output_dir (where, not what: not in config_hash): auto -> /kaggle/working"]
    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["where_diff"] == {"output_dir": ["auto", "/kaggle/working"]} and "output_dir" not in data["config_diff"]


def test_compare_config_falls_back_to_the_ledger_and_recall_to_the_predictions(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    path = kit.repo / "submissions" / "v2" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["config"], metrics["per_class_val_accuracy"]
    path.write_text(json.dumps(metrics))
    with np.load(kit.repo / "submissions" / "v2" / "logits.npz") as npz:
        labels, right = npz["val_labels"], npz["val_logits"].argmax(axis=1) == npz["val_labels"]
    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["config_diff"] == {"lora_r": [4, 8]}  # the ledger's overrides over the kernel's defaults
    assert data["b"]["per_class_recall"]["World"] == pytest.approx(right[labels == 0].mean())


def test_compare_refuses_the_paired_test_on_different_slices_and_says_why(kit):
    push_pull(kit)
    push_pull(kit, "--set", "seed=7")
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0, err  # the rest of the comparison is worth reading: the refusal is part of the answer
    assert "  seed: 42 -> 7" in out and "val accuracy [95%]" in out and "test set: v1 vs v2" in out
    line = next(line for line in out.splitlines() if line.startswith("paired test"))
    assert line.startswith("paired test: none: v1 and v2 validated on different rows (the digests of their "
                           "validation ids and labels differ)")
    assert "train_data, max_train_samples, val_fraction or seed changed" in line
    assert line.endswith("(here: seed 42 -> 7)")
    assert "verdict" not in out
    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["paired"] is None and "(here: seed 42 -> 7)" in data["paired_reason"]
    assert data["config_diff"] == {"seed": [42, 7]} and data["test"]["rows"] == 8000


# ------------------------------------------------------------------------------------------ CSV paths
def labels_csv(path, labels, ids=None, header="ID,Label"):
    ids = range(len(labels)) if ids is None else ids
    path.write_text(header + "\n" + "".join(f"{i},{k}\n" for i, k in zip(ids, labels)))
    return path


def test_compare_two_submission_files_gives_the_test_set_part_only(kit, tmp_path, monkeypatch):
    labels_csv(tmp_path / "mine.csv", [0, 1, 2, 3, 0, 1, 2, 3])
    labels_csv(tmp_path / "theirs.csv", [0, 1, 2, 3, 1, 1, 2, 0])
    monkeypatch.chdir(tmp_path)  # outside any checkout: two files need none
    code, out, err = kit.run("compare", "mine.csv", "theirs.csv")
    assert code == 0, err
    assert out.splitlines()[:2] == [
        "test set: mine.csv (A) vs theirs.csv (B): 8 rows, agreement 75.00% (2 rows differ)",
        "class     A rows  B agrees  B rows  A agrees  A share  B share"]
    assert "config" not in out and "paired" not in out
    data = one_document(kit.run("compare", "mine.csv", "theirs.csv", "--json")[1])
    assert data["config_diff"] is None and data["paired"] is None and "test predictions only" in data["paired_reason"]
    assert data["a"]["name"] == "mine.csv" and data["a"]["version"] is None and data["a"]["val_accuracy"] is None
    assert data["test"]["per_class"]["World"] == {"a_rows": 2, "b_agrees": 0.5, "b_rows": 2, "a_agrees": 0.5}
    assert data["test"]["distribution_b"] == {"World": 2, "Sports": 3, "Business": 2, "Sci/Tech": 1}


def test_compare_a_version_with_a_teammates_file(kit, tmp_path):
    push_pull(kit)
    theirs = labels_csv(tmp_path / "theirs.csv", [(i * 7) % 4 if i % 4 else 1 for i in range(8000)])
    code, out, err = kit.run("compare", 1, theirs)
    assert code == 0, err
    assert out.splitlines()[0] == f"test set: v1 vs {theirs} (B): 8,000 rows, agreement 75.00% (2,000 rows differ)"


@pytest.mark.parametrize("content, message", [
    ("ID,Label\n0,1\n1,2\n", "cover different IDs (3 and 2 rows)"),
    ("Id,Prediction\n0,1\n", "must have the columns ID,Label"),
    ("ID,Label\n0,1\n1,x\n2,0\n", "line 3 is not integer ID,Label"),
    ("ID,Label\n0,1\n1,7\n2,0\n", "line 3 has Label 7; labels are 0-3"),
    ("ID,Label\n0,1\n1,2\n1,0\n", "line 4 repeats ID 1"),
    ("ID,Label\n", "has no rows"),
    (b"ID,Label\n0,\xff\n", "is not a readable CSV"),
])
def test_compare_refuses_a_bad_submission_file_in_one_line(kit, tmp_path, content, message):
    good = labels_csv(tmp_path / "good.csv", [1, 2, 3])
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err = kit.run("compare", good, bad)
    assert code == 1 and message in error_line(err) and out == ""


def test_compare_refuses_a_missing_file_and_the_same_file_twice(kit, tmp_path):
    good = labels_csv(tmp_path / "good.csv", [1, 2, 3])
    code, out, err = kit.run("compare", good, tmp_path / "nope.csv")
    assert code == 7 and error_line(err) == (f"lorakit: error: {tmp_path / 'nope.csv'} does not exist "
                                             "(A and B are versions, N or vN, or submission CSV paths)")
    code, out, err = kit.run("compare", good, tmp_path / "." / "good.csv", "--json")
    assert code == 2 and "the same" in error_line(err) and one_document(out)["exit_code"] == 2


# ------------------------------------------------------------------------------------------ bad versions
def test_compare_names_the_versions_that_exist_and_the_pull_to_run(kit):
    code, out, err = kit.run("compare", 1, 2)
    assert code == 7 and error_line(err) == (f"lorakit: error: v1 is not a version of {kit.metadata['id']}: "
                                             "the ledger and the pulled folders know none yet (lorakit push makes one)")
    push_pull(kit)
    push(kit, "--set", "lora_r=4", message="not pulled")
    (kit.repo / "submissions" / "v7").mkdir()  # a pulled folder the ledger does not know
    code, out, err = kit.run("compare", 1, 9)
    assert code == 7 and error_line(err).endswith("the ledger and the pulled folders know v1, v2, v7")
    code, out, err = kit.run("compare", 1, "v2", "--json")
    assert code == 7 and error_line(err) == "lorakit: error: v2 is not pulled: run `lorakit pull 2`"
    assert one_document(out) == {"error": "v2 is not pulled: run `lorakit pull 2`", "exit_code": 7}
    code, out, err = kit.run("compare", "v1", 1)
    assert code == 2 and "the same" in error_line(err)


@pytest.mark.parametrize("missing, why", [("metrics.json", "metrics.json is missing"),
                                          ("logits.npz", "no validation predictions to pair")])
def test_a_pulled_folder_missing_a_file_is_not_comparable_and_the_rest_prints(kit, missing, why):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    (kit.repo / "submissions" / "v2" / missing).unlink()
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0 and "Traceback" not in err, err
    assert next(line for line in out.splitlines() if line.startswith("v2 is not comparable:")).endswith(
        why + (" (the run did not finish?)" if missing == "metrics.json" else ""))
    assert "paired test: none: v2 is not comparable" in out and "test set: v1 vs v2: 8,000 rows" in out
    assert "lora_r: 4 -> 8" in out  # the config from the ledger when metrics.json is gone
    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["b"]["comparable"] is False and why in data["b"]["reason"] and data["paired"] is None
    assert data["a"]["comparable"] is True and data["test"]["rows"] == 8000


def test_a_corrupt_npz_or_metrics_is_not_comparable_either(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    (kit.repo / "submissions" / "v1" / "logits.npz").write_bytes(b"PK\x03\x04 not a zip")
    (kit.repo / "submissions" / "v2" / "metrics.json").write_text('{"val_accuracy": "high", "config": [1]')
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0 and "Traceback" not in err, err
    assert "v1 is not comparable: " in out and "is not a readable npz" in out
    assert "v2 is not comparable: " in out and "metrics.json is not a JSON object" in out


def test_compare_with_kernel_looks_in_that_kernels_folders(kit):
    push_pull(kit)
    other = kit.metadata["id"].split("/")[0] + "/someone-elses"
    (kit.repo / "submissions" / "someone-elses" / "v4").mkdir(parents=True)
    code, out, err = kit.run("compare", 1, 4, "--kernel", other)
    assert code == 7 and error_line(err) == (f"lorakit: error: v1 is not a version of {other}: the ledger and the "
                                             "pulled folders know v4")


def test_a_version_without_its_submission_still_compares_on_validation(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    (kit.repo / "submissions" / "v2" / "submission.csv").unlink()
    code, out, err = kit.run("compare", 1, 2)
    assert code == 0, err
    assert "verdict: " in out and out.splitlines()[-1].startswith("test set: not compared: ")
    assert out.splitlines()[-1].endswith("submission.csv does not exist")
    data = one_document(kit.run("compare", 1, 2, "--json")[1])
    assert data["test"] is None and data["test_reason"].endswith("does not exist") and data["paired"]["rows"] == 2000


def test_numbers_that_are_not_show_as_unknown(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    odd = {"val_accuracy": 7, "val_rows": -3, "per_class_val_accuracy": {"World": "x"}, "train_seconds": "nan",
           "trainable_params": True, "device": "", "config": "none"}
    (kit.repo / "submissions" / "v2" / "metrics.json").write_text(json.dumps(odd))
    code, out, err = kit.run("compare", 1, 2, "--json")
    assert code == 0, err
    b = one_document(out)["b"]
    with np.load(kit.repo / "submissions" / "v2" / "logits.npz") as npz:  # what the predictions say instead
        accuracy = float((npz["val_logits"].argmax(axis=1) == npz["val_labels"]).mean())
    assert b["val_accuracy"] == accuracy and b["val_rows"] == 2000
    assert b["val_interval"] == pytest.approx(accuracy_interval(accuracy, 2000))
    assert b["train_minutes"] is None and b["trainable_params"] is None and b["device"] is None
    assert set(b["per_class_recall"]) == {"World", "Sports", "Business", "Sci/Tech"}  # from the predictions
    assert one_document(out)["config_diff"] == {"lora_r": [4, 8]}  # "config": "none" -> the ledger's overrides


# ------------------------------------------------------------------------------------------ noise
@pytest.mark.parametrize("b, c, rows", [(14, 12, 200), (174, 180, 2000), (30, 22, 2000), (5, 0, 50)])
def test_rows_to_tell_paired_is_where_the_same_difference_becomes_significant(b, c, rows):
    """Connor's sample size: at the rows it names, the same shares of discordant rows give p < 0.05 (its 80%
    power asks for more than the bare significance); well below it they do not."""
    from lorakit.stats import rows_to_tell_paired

    need = rows_to_tell_paired(b, c, rows)
    scaled = lambda n: (round(b * n / rows), round(c * n / rows))  # noqa: E731
    assert mcnemar_exact(*scaled(need)) < 0.05 and mcnemar_exact(*scaled(need // 4)) > 0.05
    assert rows_to_tell_paired(7, 7, 100) is None and rows_to_tell_paired(0, 0, 100) is None


def test_two_proportions_p_is_the_pooled_z_test():
    from scipy.stats import norm

    from lorakit.stats import rows_to_tell, two_proportions_p

    p1, n1, p2, n2 = 0.90, 2000, 0.88, 1500
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert two_proportions_p(p1, n1, p2, n2) == pytest.approx(2 * norm.sf(z), rel=1e-9)
    need = rows_to_tell(0.90, 0.88)
    assert two_proportions_p(0.90, need, 0.88, need) < 0.05 < two_proportions_p(0.90, need // 4, 0.88, need // 4)


def test_compare_says_how_many_rows_would_tell_two_indistinguishable_versions_apart(kit):
    from lorakit.stats import rows_to_tell_paired

    two_hand_made(kit, both=160, a_only=14, b_only=12)
    code, out, err = kit.run("compare", 1, 2)
    need = rows_to_tell_paired(14, 12, ROWS)
    assert f"noise: the 200 shared validation rows cannot tell v1 and v2 apart; roughly {need:,} would" in out
    paired = one_document(kit.run("compare", 1, 2, "--json")[1])["paired"]
    assert paired["rows_needed"] == need and paired["noise"].startswith("the 200 shared validation rows")
    write_validation(kit, 2, discordant(150, 30, 12)[1])
    write_validation(kit, 1, discordant(150, 30, 12)[0])
    code, out, err = kit.run("compare", 1, 2)
    assert "verdict: v1 beats v2" in out and "noise" not in out  # told apart: nothing to say
    assert one_document(kit.run("compare", 1, 2, "--json")[1])["paired"]["rows_needed"] is None


# ------------------------------------------------------------------------------------------ several
def test_three_versions_compare_pairwise_with_holm_one_verdict_line_each(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    push_pull(kit, "--set", "lora_r=8", "--set", "lr=0.001")
    push_pull(kit, "--set", "lora_r=8", "--set", "seed=7")
    a, b = discordant(120, 40, 10)
    write_validation(kit, 1, a)
    write_validation(kit, 2, b)
    write_validation(kit, 3, discordant(120, 30, 12)[1])
    code, out, err = kit.run("compare", 1, 2, "v3", "--json")
    assert code == 0, err
    data = one_document(out)
    assert [v["name"] for v in data["versions"]] == ["v1", "v2", "v3"]
    assert data["config_diff"] == {"lora_r": {"v1": 4, "v2": 8, "v3": 8}, "lr": {"v1": 0.0005, "v2": 0.0005, "v3": 0.001}}
    pairs = {(p["a"], p["b"]): p for p in data["pairs"]}
    raw = [pairs[k]["paired"]["p_value"] for k in (("v1", "v2"), ("v1", "v3"), ("v2", "v3"))]
    assert [pairs[k]["p_holm"] for k in (("v1", "v2"), ("v1", "v3"), ("v2", "v3"))] == pytest.approx(holm(raw))
    counts = pairs[("v1", "v2")]["paired"]
    assert (counts["a_wins"], counts["b_wins"], counts["rows"]) == (40, 10, ROWS)

    code, out, err = kit.run("compare", 1, 2, 3, 4)
    lines = out.splitlines()
    assert lines[:2] == ["config (the keys that differ):", "key     v1      v2      v3     v4"]
    verdicts = [line for line in lines if line.startswith("  v")]
    assert len(verdicts) == 6  # one line per pair
    first = verdicts[0]
    assert first.startswith("  v1 vs v2: v1 beats v2 on 40 rows and loses on 10: ")
    assert f"p = {raw[0]:.2g}, Holm {pairs[('v1', 'v2')]['p_holm']:.2g}" in first  # the raw p beside the Holm one
    assert all("not paired: " in line and "(here: seed 42 -> 7)" in line for line in verdicts if "v4" in line)
    assert "Holm over the 3 pairs tested" in out


@pytest.mark.parametrize("argv, code, words", [
    ((1, 2, "x.csv"), 2, "compare takes submission CSV paths two at a time"),
    ((1, 2, "v1"), 2, "name one twice"),
    ((1,), 2, "compare needs two versions or files"),
    (("--seeds", 1, 2, 3), 2, "--seeds compares two seed groups"),
])
def test_a_compare_that_cannot_be_made_is_refused_in_one_line(kit, argv, code, words):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    got, out, err = kit.run("compare", *argv)
    assert got == code and words in error_line(err)


def test_compare_seeds_pairs_two_groups_seed_by_seed_and_sums_them(kit):
    for seed in (42, 43):
        push_pull(kit, "--set", "lora_r=4", "--set", f"seed={seed}")  # v1, v3
        push_pull(kit, "--set", "lora_r=8", "--set", f"seed={seed}")  # v2, v4
    push_pull(kit, "--set", "lora_r=8", "--set", "seed=44")  # v5: B's alone
    code, out, err = kit.run("compare", "--seeds", 1, 4, "--json")
    assert code == 0, err
    data = one_document(out)
    assert (data["a"], data["b"]) == ([1, 3], [2, 4, 5]) and data["config_diff"] == {"lora_r": [4, 8]}
    seeds = {s["seed"]: s for s in data["seeds"]}
    assert (seeds[42]["a"], seeds[42]["b"], seeds[43]["a"], seeds[43]["b"]) == (1, 2, 3, 4)
    assert data["unpaired"] == [{"group": "B", "version": 5, "seed": 44}]
    summed = [sum(s["paired"][k] for s in data["seeds"]) for k in ("a_wins", "b_wins", "rows")]
    combined = data["combined"]
    assert [combined["a_wins"], combined["b_wins"], combined["rows"]] == summed and summed[2] == 2 * 2000
    assert combined["p_value"] == pytest.approx(mcnemar_exact(summed[0], summed[1]))
    code, out, err = kit.run("compare", "--seeds", 3, 2)
    assert "seed groups: A = v1+v3, B = v2+v4+v5" in out and "unpaired: v5 of B (seed 44)" in out
    assert "combined over 2 seeds, 4,000 paired rows" in out and "verdict: " in out
    code, out, err = kit.run("compare", "--seeds", 1, 3)
    assert code == 2 and "are in one seed group (v1+v3)" in error_line(err)


# ------------------------------------------------------------------------------------------ failures, files
def test_an_error_version_is_named_with_its_failure_never_pull(kit):
    push_pull(kit)
    kit.state.status_script, kit.state.failure_message = ["ERROR"], "CUDA out of memory"
    push(kit, "--set", "lora_r=4")
    assert kit.run("status", 2)[0] == 3
    code, out, err = kit.run("compare", 1, 2)
    line = error_line(err)
    assert code == 1 and line.endswith("v2 ended ERROR (CUDA out of memory): it has no results to compare "
                                       "(its log: lorakit logs 2)") and "pull" not in line
    versions(kit)[1].outputs.pop("metrics.json")  # the run died before writing it
    assert kit.run("pull", 2)[0] == 0
    code, out, err = kit.run("compare", 1, 2)
    assert code == 1 and "v2 ended ERROR (CUDA out of memory)" in error_line(err) and "metrics.json" not in err


def test_two_submission_paths_find_their_own_probabilities_beside_them(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    folder = kit.repo / "submissions"
    labels = [(i * 7 + (i % 3 == 0)) % 4 for i in range(8000)]  # a quarter of the rows differ from v1's
    (folder / "v2" / "submission.csv").write_text("ID,Label\n" + "".join(f"{i},{k}\n" for i, k in enumerate(labels)))
    (folder / "v2" / "probabilities.csv").write_text(
        "ID,p_0,p_1,p_2,p_3\n" + "".join(f"{i}," + ",".join("0.7" if c == k else "0.1" for c in range(4)) + "\n"
                                         for i, k in enumerate(labels)))
    code, out, err = kit.run("compare", "submissions/v1/submission.csv", "submissions/v2/submission.csv", "--json")
    test = one_document(out)["test"]
    assert test["disagreements"] == 2667 and test["confidence_a"] == pytest.approx(0.7)
    assert test["confidence_b"] == pytest.approx(0.7)
    other = kit.repo / "elsewhere"
    other.mkdir()
    (other / "submission.csv").write_bytes((folder / "v2" / "submission.csv").read_bytes())
    (other / "probabilities.csv").write_bytes((folder / "v1" / "probabilities.csv").read_bytes())  # not its own
    code, out, err = kit.run("compare", "submissions/v1/submission.csv", "elsewhere/submission.csv")
    assert code == 0 and "needs each side's own probabilities.csv beside its submission" in out
