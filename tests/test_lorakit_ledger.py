"""The ledger (submissions/ledger.csv): pandas-readable, never corrupted or overwritten, locked, one row per (kernel,
version), migrated in place."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time

import pytest

from lorakit import ledger as ledger_module
from lorakit.errors import LedgerError, NotFound
from lorakit.ledger import COLUMNS, Ledger

from lorakit_fixtures import REPO, USERNAME, error_line, push, push_pull


def test_ledger_round_trip_is_pandas_readable(tmp_path):
    import pandas as pd

    ledger = Ledger(tmp_path / "submissions" / "ledger.csv")
    assert ledger.rows() == [] and not ledger.exists()
    ledger.update(2, message='comma, "quotes"\nand a newline', trainable_params=592900, git_dirty=True)
    ledger.update(1, message="first", val_accuracy=0.9412345678)
    ledger.update(2, status="COMPLETE")
    rows = ledger.rows()
    assert [r["version"] for r in rows] == ["1", "2"]
    assert rows[1]["message"] == 'comma, "quotes"\nand a newline' and rows[1]["status"] == "COMPLETE"
    assert rows[1]["git_dirty"] == "true" and rows[0]["val_accuracy"] == "0.941235"
    frame = pd.read_csv(ledger.path)
    assert list(frame.columns) == COLUMNS and list(frame["version"]) == [1, 2]
    assert ledger.latest_version() == 2


def test_ledger_keeps_unknown_columns(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text("version,message,my_note\n3,hello,keep me\n")
    Ledger(path).update(3, status="RUNNING")
    row = Ledger(path).row(3)
    assert row["my_note"] == "keep me" and row["status"] == "RUNNING" and row["message"] == "hello"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "empty"),
        ("version,message\n1,a\n1,b\n", "appears twice"),
        ("version,message\nx,a\n", "line 2 has version 'x'"),
        ("message,status\nhello,ok\n", "header"),
        ("version,message\n1,a,b\n", "line 2 has 3 fields"),
        ("version,message\n1,\x00\n", "NUL"),
    ],
)
def test_corrupted_ledger_raises_and_is_not_rewritten(tmp_path, content, expected):
    path = tmp_path / "ledger.csv"
    path.write_text(content)
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match=expected):
        ledger.update(1, status="x")
    with pytest.raises(LedgerError):
        ledger.rows()
    assert path.read_text() == content


def test_ledger_not_utf8(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_bytes(b"version\n\xff\xfe\n")
    with pytest.raises(LedgerError, match="UTF-8"):
        Ledger(path).rows()


def test_ledger_concurrent_updates_lose_no_row(tmp_path):
    path = tmp_path / "ledger.csv"
    errors = []

    def writer(start):
        try:
            for v in range(start, start + 10):
                Ledger(path).update(v, message=f"m{v}")
                Ledger(path).update(v, status="QUEUED")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(1 + 10 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = Ledger(path).rows()
    assert [int(r["version"]) for r in rows] == list(range(1, 41))
    assert all(r["status"] == "QUEUED" and r["message"] == f"m{r['version']}" for r in rows)


def test_ledger_concurrent_processes(tmp_path):
    path = tmp_path / "ledger.csv"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from lorakit.ledger import Ledger;"
        "[Ledger(sys.argv[2]).update(int(sys.argv[3]) + i, message='p') for i in range(15)]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(REPO / "src"), str(path), str(100 * k + 1)]) for k in range(3)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert len(Ledger(path).rows()) == 45


def test_ledger_write_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ledger.csv"
    ledger = Ledger(path)
    ledger.update(1, message="safe")
    before = path.read_bytes()

    real_writerow = csv.DictWriter.writerow

    def exploding(self, row):
        if row.get("version") == "2":
            raise KeyboardInterrupt
        return real_writerow(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", exploding)
    with pytest.raises(KeyboardInterrupt):
        ledger.update(2, message="lost")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ledger.")] == []


def test_latest_version_needs_a_ledger(tmp_path):
    with pytest.raises(NotFound, match="no ledger"):  # exit 7: no version to act on
        Ledger(tmp_path / "ledger.csv").latest_version()
    (tmp_path / "ledger.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(NotFound, match="no versions"):
        Ledger(tmp_path / "ledger.csv").latest_version()


def test_corrupted_ledger_is_never_overwritten(kit):
    kit.ledger.parent.mkdir()
    kit.ledger.write_text("version,message\n1,ok\n2,broken,extra,fields\n")
    before = kit.ledger.read_bytes()
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "corrupted" in err and "line 3" in err
    assert not kit.state.requests  # refused before the push
    assert kit.ledger.read_bytes() == before
    for argv in (("status",), ("scores",), ("quota",)):
        code, out, err = kit.run(*argv)
        assert code == 1 and "corrupted" in err
    assert kit.ledger.read_bytes() == before


def test_missing_ledger(kit):
    code, out, err = kit.run("status")
    assert code == 7 and "no ledger at" in err and "push a version first" in err
    code, out, err = kit.run("pull")
    assert code == 7 and "no ledger" in err
    code, out, err = kit.run("scores")  # works without one
    assert code == 0 and "no submissions" in out
    assert not kit.ledger.exists()
    code, out, err = kit.run("quota")
    assert code == 0 and "no run minutes recorded" in out


def test_ledger_gets_recreated_for_explicit_versions(kit):
    push_pull(kit)
    kit.ledger.unlink()
    code, out, err = kit.run("pull", 1)
    assert code == 0, err
    assert kit.row(1)["val_accuracy"]


def test_a_held_ledger_lock_refuses_before_sending(kit, monkeypatch):
    from filelock import FileLock

    push_pull(kit)
    monkeypatch.setattr(ledger_module, "LOCK_WAIT_S", 0.5)
    with FileLock(str(kit.ledger) + ".lock"):
        start = time.monotonic()
        code, out, err = kit.run("push", "-m", "locked", "--set", "lora_r=4")
        assert code == 1 and "is locked by another lorakit command" in error_line(err)
        code, out, err = kit.run("submit", 1)
        assert code == 1 and "is locked by another lorakit command" in error_line(err)
        assert time.monotonic() - start < 15
    assert not kit.state.calls("SaveKernel")[1:] and not kit.state.calls("CreateSubmission")
    assert [r["version"] for r in kit.rows()] == ["1"]


def test_two_kernels_keep_their_own_v1(kit):
    push_pull(kit, "--set", "lora_r=4")
    assert kit.run("submit", 1, "--wait")[0] == 0
    other = f"{USERNAME}/second-kernel"
    code, out, err = kit.run("push", "-m", "other", "--kernel", other)
    assert code == 0 and f"pushed v1 of {other}" in out and "replaced" not in err
    mine, theirs = sorted(kit.rows(), key=lambda r: r["kernel_ref"] != f"{USERNAME}/{kit.slug}")
    assert mine["message"] == "baseline" and mine["submission_ref"] and mine["public_score"]
    assert theirs["kernel_ref"] == other and theirs["message"] == "other" and theirs["version"] == "1"

    assert kit.run("status", 1, "--kernel", other, "--wait")[0] == 0
    asked = kit.state.calls("GetKernelSessionStatus")[-1][2]
    assert (asked["userName"], asked["kernelSlug"]) == (USERNAME, "second-kernel")
    code, out, err = kit.run("pull", 1, "--kernel", other)
    assert code == 0, err
    assert (kit.repo / "submissions" / "second-kernel" / "v1" / "submission.csv").is_file()
    code, out, err = kit.run("submit", 1, "--kernel", other)
    assert code == 0, err
    assert kit.state.submissions[-1].description.startswith(f"v1 {other} ")
    code, out, err = kit.run("scores", "--json")
    data = json.loads(out)
    assert {(s["kernel"], s["version"]) for s in data["submissions"]} == {
        (f"{USERNAME}/{kit.slug}", 1), (other, 1)}
    assert all(r["submission_ref"] for r in kit.rows())


def test_an_old_ledger_is_migrated_in_place_without_loss(kit):
    old_columns = ["version", "pushed_at", "message", "overrides", "config_hash", "kernel_ref", "push_token",
                   "status", "val_accuracy", "submission_ref", "submission_status", "public_score"]
    kit.ledger.parent.mkdir()
    kit.ledger.write_text(",".join(old_columns) + "\n"
                          "1,2025-04-01T00:00:00Z,scored,{},abc,,,COMPLETE,0.91,50000001,COMPLETE,0.8612\n",
                          encoding="utf-8")
    code, out, err = kit.run("push", "-m", "other", "--kernel", f"{USERNAME}/second-kernel")
    assert code == 0, err
    rows = {r["kernel_ref"]: r for r in kit.rows()}
    old = rows[kit.metadata["id"]]  # the metadata's kernel, written in
    assert (old["version"], old["message"], old["submission_ref"], old["public_score"]) == (
        "1", "scored", "50000001", "0.8612")
    assert rows[f"{USERNAME}/second-kernel"]["version"] == "1"
    kit.run("status", 1)  # the old row is the main kernel's v1: that is the kernel asked about
    assert kit.state.calls("GetKernelSessionStatus")[-1][2]["kernelSlug"] == kit.slug


def test_a_ledger_saved_with_a_bom_is_read_and_written_without_one(kit):
    push(kit)
    kit.ledger.write_bytes(b"\xef\xbb\xbf" + kit.ledger.read_bytes())
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 QUEUED" in out, err
    assert not kit.ledger.read_bytes().startswith(b"\xef\xbb\xbf") and kit.row(1)["status"] == "QUEUED"
