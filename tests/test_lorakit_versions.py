"""`lorakit versions`: every version the ledger knows, with its state, config changes, validation interval,
scores and marks, as a table, --json and --csv; offline, from the ledger and the pulled folders."""
from __future__ import annotations

import io
import json

import pytest

from lorakit.stats import accuracy_interval
from lorakit_fixtures import error_line, full_disk_after, one_document, push, push_pull


def versions_json(kit, *extra) -> dict:
    code, out, err = kit.run("versions", "--json", *extra)
    assert code == 0, err
    return {row["version"]: row for row in one_document(out)["versions"]}


def test_every_version_is_listed_with_its_state_changes_interval_and_scores(kit, monkeypatch):
    kit.state.score_hook = lambda content: ("0.85000", "0.84000")
    push_pull(kit, "--set", "lora_r=4")
    assert kit.run("submit", 1, "--wait")[0] == 0
    push_pull(kit, "--set", "lr=0.001")
    kit.state.submission_script = ["PENDING"]
    assert kit.run("submit", 2)[0] == 0
    push_pull(kit, "--set", "lora_dropout=0.2")  # pulled, never submitted: `scores` has no row for it
    for number, status in ((4, "QUEUED"), (5, "RUNNING"), (6, "ERROR"), (7, "COMPLETE")):
        kit.state.status_script = [status]
        push(kit, "--set", f"seed={number}", message=f"seed {number}")
        kit.run("status", number)  # what the ledger last saw
    kit.state.fail("SaveKernel", 502)
    kit.state.fail("GetKernel", 500, times=None, skip=1)
    assert kit.run("push", "-m", "lost reply", "--set", "seed=8")[0] == 5  # recorded as v8, UNCONFIRMED
    kit.state.faults.clear()
    with monkeypatch.context() as mp:  # a push recorded, sent, and never numbered: the disk filled up
        mp.setenv("LORAKIT_CONFIRM_S", "600")  # v8 is not found on Kaggle yet, and Kaggle may still show it
        full_disk_after(mp, kit, "SaveKernel", skip=len(kit.state.calls("SaveKernel")))
        code, out, err = kit.run("push", "-m", "disk full", "--set", "seed=9")
        assert code == 1, err
    assert kit.row(8)["status"] == "UNCONFIRMED" and kit.rows()[-1]["version"] == ""

    code, out, err = kit.run("scores")
    assert code == 0 and "listed by lorakit versions" in err
    table = out.split("\n\n")[0].splitlines()[1:]
    assert len(table) == 2 and not any("v3" in line.split() for line in table)  # the motivating bug

    rows = versions_json(kit)
    states = {v: rows[v]["state"] for v in rows}
    assert states == {None: "sending", 8: "sending", 7: "complete", 6: "error", 5: "running", 4: "pushed",
                      3: "pulled", 2: "submitted", 1: "scored"}
    assert list(rows) == [None, 8, 7, 6, 5, 4, 3, 2, 1]  # newest first
    assert rows[None]["message"] == "disk full" and rows[None]["changes_from_defaults"] == {"seed": 9}
    assert rows[1]["changes_from_defaults"] == {"lora_r": 4} and rows[2]["changes_from_defaults"] == {"lr": 0.001}
    assert rows[3]["changes_from_defaults"] == {"lora_dropout": 0.2}
    assert rows[4]["changes_from_defaults"] == {"seed": 4}  # the ledger's overrides
    # changes: what tells the rows listed apart, each row with its own value of every key that differs
    assert rows[1]["changes"] == {"lora_dropout": 0.1, "lora_r": 4, "lr": 0.0005, "seed": 42}
    assert rows[4]["changes"] == {"lora_dropout": 0.1, "lora_r": 16, "lr": 0.0005, "seed": 4}
    assert (rows[1]["public_score"], rows[1]["private_score"]) == (0.85, 0.84) and rows[2]["public_score"] is None
    metrics = json.loads((kit.repo / "submissions" / "v3" / "metrics.json").read_text())
    low, high = accuracy_interval(metrics["val_accuracy"], metrics["val_rows"])
    v3 = rows[3]
    assert v3["val_accuracy"] == metrics["val_accuracy"] and v3["val_rows"] == metrics["val_rows"] == 2000
    assert v3["val_low"] == pytest.approx(low, abs=1e-6) and v3["val_high"] == pytest.approx(high, abs=1e-6)
    assert low < v3["val_accuracy"] < high and high - low == pytest.approx(0.0264, abs=0.002)
    assert v3["trainable_params"] == metrics["trainable_params"] and v3["train_minutes"] == 20.0
    assert v3["device"] == "cuda:0 (Tesla T4)" and v3["marks"] == [] and v3["message"] == "baseline"
    assert rows[4]["val_accuracy"] is None and rows[4]["trainable_params"] > 0  # the count recorded at push

    code, out, err = kit.run("versions")
    assert code == 0, err
    lines = out.split("\n\n")[0].splitlines()  # the versions' table, then the seed groups'
    assert lines[0].split()[:3] == ["version", "state", "message"] and len(lines) == 10
    assert lines[1].split()[:4] == ["-", "sending", "disk", "full"]
    v3_line = next(line for line in lines if line.startswith("v3 "))
    assert "pulled" in v3_line and "lora_dropout=0.2" in v3_line and f"[{low:.4f}-{high:.4f}]" in v3_line
    assert "0.85000" in next(line for line in lines if line.startswith("v1 "))
    assert "refresh" in err and "Traceback" not in err


def test_smoke_interrupted_and_not_comparable_are_marked_never_a_traceback(kit):
    push_pull(kit, "--set", "smoke=true")
    for seed in (2, 3, 4, 5):
        push_pull(kit, "--set", f"seed={seed}")
    folder = kit.repo / "submissions"
    metrics = json.loads((folder / "v2" / "metrics.json").read_text())
    (folder / "v2" / "metrics.json").write_text(json.dumps({**metrics, "interrupted": True, "signal": "SIGTERM"}))
    (folder / "v3" / "logits.npz").unlink()
    (folder / "v4" / "metrics.json").unlink()
    (folder / "v5" / "metrics.json").write_text("{not json")

    rows = versions_json(kit)
    assert rows[1]["marks"] == ["smoke"] and rows[1]["smoke"] is True
    assert rows[2]["marks"] == ["interrupted (SIGTERM)"] and rows[2]["signal"] == "SIGTERM"
    assert rows[3]["not_comparable"].endswith("logits.npz is missing: no validation predictions to pair")
    assert rows[3]["val_low"] is not None  # metrics.json is there: the interval still shows
    assert "metrics.json is missing" in rows[4]["not_comparable"]
    assert rows[4]["val_rows"] == 2000  # what logits.npz's validation predictions say, as compare reads them
    assert rows[4]["val_accuracy"] == float(kit.row(4)["val_accuracy"])
    assert "v5/metrics.json is not a JSON object" in rows[5]["not_comparable"]
    assert all(rows[v]["state"] == "pulled" for v in rows)

    code, out, err = kit.run("versions")
    assert code == 0 and "Traceback" not in err
    assert "not comparable: " in next(line for line in out.splitlines() if line.startswith("v3 "))
    assert "smoke" in next(line for line in out.splitlines() if line.startswith("v1 "))


def test_csv_reads_with_pandas_and_excludes_json(kit):
    import pandas

    push_pull(kit, "--set", "lora_r=4")
    push(kit, "--set", "lora_r=2", message='a "quoted", comma message')
    code, out, err = kit.run("versions", "--csv")
    assert code == 0, err
    frame = pandas.read_csv(io.StringIO(out))
    assert list(frame["version"]) == [2, 1] and list(frame["state"]) == ["pushed", "pulled"]
    assert frame.loc[0, "message"] == 'a "quoted", comma message' and frame.loc[1, "changes"] == "lora_r=4"
    assert frame["val_accuracy"].isna().tolist() == [True, False] and frame.loc[1, "val_rows"] == 2000
    assert frame.loc[1, "val_low"] < frame.loc[1, "val_accuracy"] < frame.loc[1, "val_high"]

    code, out, err = kit.run("versions", "--csv", "--json")
    assert code == 2 and "choose one of --csv and --json" in error_line(err)
    assert one_document(out)["exit_code"] == 2


def test_corrupt_ledger_is_refused_and_left_as_it_is(kit):
    push_pull(kit)
    kit.ledger.write_text(kit.ledger.read_text() + "1,broken\n")
    before = kit.ledger.read_bytes()
    code, out, err = kit.run("versions")
    assert code == 1 and "corrupted" in error_line(err) and out == ""
    assert kit.ledger.read_bytes() == before


def test_empty_ledger_says_so_and_kernel_chooses_whose_rows(kit):
    code, out, err = kit.run("versions")
    assert code == 0 and "no versions of" in out and "lorakit push" in out
    assert versions_json(kit) == {}
    push_pull(kit)
    code, out, err = kit.run("versions", "--kernel", "alice/another-kernel")
    assert code == 0 and out == "no versions of alice/another-kernel in the ledger yet: lorakit push records them\n"
    assert list(versions_json(kit)) == [1]


def test_each_version_records_its_image_only_while_it_is_the_newest_and_compare_warns(kit):
    push_pull(kit)  # status --wait sees v1 end while it is the newest version
    row = kit.row(1)
    assert (row["docker_image"], row["machine_shape"]) == ("gcr.io/kaggle-gpu-images/python:v160", "NvidiaTeslaT4")
    assert "image" not in kit.run("versions")[1].splitlines()[0]  # one image: no column
    kit.state.docker_image = "gcr.io/kaggle-gpu-images/python:v161"
    push(kit, "--set", "lora_r=4")
    push(kit, "--set", "lora_r=8", "--accelerator", "NvidiaL4X1")
    assert kit.run("status", 2, "--wait")[0] == 0  # v2 ended, but GetKernel describes v3's session now
    assert kit.row(2)["docker_image"] == "" and kit.row(2)["machine_shape"] == ""
    assert kit.run("status", 3, "--wait")[0] == 0 and kit.run("pull", 3)[0] == 0
    assert (kit.row(3)["docker_image"], kit.row(3)["machine_shape"]) == ("gcr.io/kaggle-gpu-images/python:v161",
                                                                         "NvidiaL4X1")
    header, *lines = kit.run("versions")[1].splitlines()
    assert header.split()[-1] == "image" and lines[0].endswith("python:v161") and lines[2].endswith("python:v160")
    assert versions_json(kit)[3]["docker_image"] == "gcr.io/kaggle-gpu-images/python:v161"
    code, out, err = kit.run("compare", 1, 3)
    assert code == 0 and "v1 and v3 ran on different Docker images (gcr.io/kaggle-gpu-images/python:v160 and " \
                         "gcr.io/kaggle-gpu-images/python:v161)" in err
    assert "v1 and v3 ran on different accelerators (NvidiaTeslaT4 and NvidiaL4X1)" in err
    assert len(one_document(kit.run("compare", 1, 3, "--json")[1])["environment_warnings"]) == 2


def table_of(out: str) -> list:
    """The versions' table of `lorakit versions` (before the lines under it), as lists of cells."""
    lines = out.split("\n\n")[0].splitlines()
    return [line.split() for line in lines if line and not line.startswith("every version listed")]


def test_where_and_sort_keep_and_order_the_rows(kit):
    kit.accuracy = lambda cfg, number: {4: 0.88, 8: 0.91, 16: 0.90}.get(cfg.lora_r, 0.5)
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8", "--set", "lr=0.001")
    push_pull(kit, "--set", "lora_r=16", "--set", "lr=1e-3")
    push(kit, "--set", "lora_r=2", message="not run yet")
    json_rows = lambda *argv: [r["version"] for r in one_document(kit.run("versions", "--json", *argv)[1])["versions"]]
    assert json_rows("--where", "lr=0.001") == [3, 2]  # 1e-3 and 0.001 are one number
    assert json_rows("--where", "lora_r>=8") == [3, 2] and json_rows("--where", "lora_r<8") == [4, 1]
    assert json_rows("--where", "state=pulled", "--where", "lr!=1e-3") == [1]  # every condition holds
    assert json_rows("--sort", "val_acc") == [2, 3, 1, 4]  # best first, the unknown last
    assert json_rows("--sort", "val_accuracy", "--reverse") == [1, 3, 2, 4]  # the unknown last all the same
    assert json_rows("--sort", "lora_r") == [4, 1, 2, 3] and json_rows("--reverse") == [1, 2, 3, 4]
    assert json_rows("--where", "val_acc>0.95") == []
    code, out, err = kit.run("versions", "--where", "val_acc>0.95")
    assert code == 0 and out.startswith("no version of") and "matches val_acc>0.95" in out


@pytest.mark.parametrize("argv, words", [
    (("--where", "lorar=4"), "unknown key 'lorar' in --where/--sort (did you mean lora_r?)"),
    (("--where", "lorar=4", "--sort", "lorar"), "unknown key 'lorar' in --where/--sort"),
    (("--sort", "score"), "unknown key 'score'"),
    (("--where", "lora_r"), "--where takes KEY=VALUE"),
    (("--where", "tags>final"), "tags take = (has the tag) or != (lacks it)"),
])
def test_an_unknown_key_or_a_bad_condition_is_one_line_naming_it_once(kit, argv, words):
    push(kit)
    code, out, err = kit.run("versions", *argv)
    line = error_line(err)
    assert code == 2 and words in line and line.count("lorar") <= 1 and out == ""


def test_changes_are_what_tells_the_rows_listed_apart(kit):
    push_pull(kit, "--set", "lora_r=4", "--set", "max_train_samples=9000")
    push_pull(kit, "--set", "lora_r=16", "--set", "max_train_samples=9000")  # the default rank: shown all the same
    push_pull(kit, "--set", "lora_r=4", "--set", "lr=0.002", "--set", "max_train_samples=9000")
    code, out, err = kit.run("versions")
    assert code == 0, err
    rows = {cells[0]: cells for cells in table_of(out)[1:]}
    assert rows["v1"][3:5] == ["lora_r=4", "lr=0.0005"] and rows["v2"][3:5] == ["lora_r=16", "lr=0.0005"]
    assert rows["v3"][3:5] == ["lora_r=4", "lr=0.002"]
    assert "every version listed: max_train_samples=9000" in out  # what they all change, once
    data = one_document(kit.run("versions", "--json", "--where", "lora_r=4")[1])
    assert [r["changes"] for r in data["versions"]] == [{"lr": 0.002}, {"lr": 0.0005}]
    assert data["shared_changes"] == {"lora_r": 4, "max_train_samples": 9000}
    assert data["versions"][0]["changes_from_defaults"] == {"lora_r": 4, "lr": 0.002, "max_train_samples": 9000}


def test_long_texts_are_shortened_in_the_middle_and_whole_with_wide(kit):
    message = "a long message " + "x" * 60 + " that ends here"
    targets = "query,key,value,attention.output.dense,intermediate.dense"
    push(kit, "--set", f"lora_targets={targets}", "--set", "lora_r=1", message=message)
    push(kit, message="short")
    code, out, err = kit.run("versions")
    line = next(line for line in out.splitlines() if line.startswith("v1 "))
    assert "a long message xxxx...xxx that ends here" in line and message not in line  # 40 characters
    assert "lora_targets=query,key,v...iate.dense" in line  # a value: 24
    code, out, err = kit.run("versions", "--wide")
    assert message in out and f"lora_targets={targets}" in out
    code, out, err = kit.run("versions", "--json")
    assert one_document(out)["versions"][1]["message"] == message  # JSON and CSV are whole


def test_an_error_version_shows_its_failure_reason(kit):
    kit.state.status_script, kit.state.failure_message = ["RUNNING", "ERROR"], "CUDA out of memory"
    push(kit)
    assert kit.run("status", 1, "--wait")[0] == 3
    assert kit.row(1)["failure_message"] == "CUDA out of memory"
    code, out, err = kit.run("versions")
    assert "failed: CUDA out of memory" in next(line for line in out.splitlines() if line.startswith("v1 "))
    row = one_document(kit.run("versions", "--json")[1])["versions"][0]
    assert row["state"] == "error" and row["failure_message"] == "CUDA out of memory"
    assert row["marks"] == ["failed: CUDA out of memory"]


def test_versions_that_differ_only_in_seed_form_a_group(kit):
    kit.accuracy = lambda cfg, number: {42: 0.90, 43: 0.92, 44: 0.91}.get(cfg.seed, 0.5)
    for seed in (42, 43, 44):
        push_pull(kit, "--set", "lora_r=8", "--set", f"seed={seed}")
    push_pull(kit, "--set", "lora_r=4")  # alone: no group
    kit.state.status_script = ["ERROR"]
    push(kit, "--set", "lora_r=8", "--set", "seed=45")  # failed: no member
    kit.run("status", 5)
    data = one_document(kit.run("versions", "--json")[1])
    (group,) = data["seed_groups"]
    assert group["versions"] == [1, 2, 3] and group["seeds"] == [42, 43, 44]
    assert group["val_accuracy_mean"] == pytest.approx(0.91, abs=1e-3)
    assert group["val_accuracy_spread"] == pytest.approx(0.01, abs=1e-3) and group["val_accuracy_n"] == 3
    assert group["public_score_mean"] is None and group["public_score_n"] == 0
    code, out, err = kit.run("versions")
    groups = out.split("seed groups")[1].splitlines()
    assert groups[2].split()[:3] == ["v1+v2+v3", "42,43,44", "lora_r=8"]
    assert "0.9100 ± 0.0100 (n=3)" in groups[2]
