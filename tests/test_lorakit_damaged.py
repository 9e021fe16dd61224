"""Pulled outputs are untrusted input (issue 22): a damaged metrics.json or logits.npz, one of each kind the issue
names, is one line naming the file and the version in `versions`, `compare`, `report`, `pull` and `sync`, which
exit as the rule says and go on with the other version; nothing allocates what a file's header claims, so a
3 MB file adds well under 200 MB to a command's own peak memory."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from lorakit_fixtures import REPO, push_pull, versions


def arrays_of(kit, version: int) -> dict:
    with np.load(kit.repo / "submissions" / f"v{version}" / "logits.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def npz_of(arrays: dict, extra: dict = ()) -> bytes:
    """An npz of ``arrays``, with ``extra`` members (name -> raw .npy bytes) added as they are."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, raw in dict(extra).items():
            archive.writestr(name, raw)
    return buffer.getvalue()


def npy_header(shape: tuple, descr: str) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def digest(ids, labels) -> str:
    return hashlib.sha256(np.asarray(ids, "<i8").tobytes() + np.asarray(labels, "<i8").tobytes()).hexdigest()


def bomb_member(name: str, rows: int) -> bytes:
    """A zip holding one member, ``name``: a float64 (rows, 4) array of zeros, about 3 MB deflated and
    rows * 32 bytes once read. Each MiB of zeros is deflated once and repeated: a full flush makes each block
    stand alone."""
    header, mib = npy_header((rows, 4), "<f8"), bytes(2**20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    count = rows * 32 // len(mib)
    data = head + block * count + packer.flush()
    crc = zlib.crc32(header)
    for _ in range(count):
        crc = zlib.crc32(mib, crc)
    size, named = len(header) + count * len(mib), name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(named), 0) + named
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(named),
                          0, 0, 0, 0, 0, 0) + named
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def bomb(arrays: dict) -> bytes:
    """logits.npz whose val_logits would take 3.3 GB: the bomb, then the other arrays as the run wrote them."""
    buffer = io.BytesIO(bomb_member("val_logits.npy", 100 * 2**20))
    others = {k: v for k, v in arrays.items() if k != "val_logits"}
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in others.items():
            raw = io.BytesIO()
            np.save(raw, value, allow_pickle=False)
            archive.writestr(f"{key}.npy", raw.getvalue())
    return buffer.getvalue()


def other_rows(a: dict) -> dict:  # the same digest stored, the ids of other rows
    return {"logits.npz": npz_of({**a, "val_ids": a["val_ids"] + 1})}


def one_row(a: dict) -> dict:  # one row, its own digest right: metrics.json says 2,000
    ids, labels = a["val_ids"][:1], a["val_labels"][:1]
    return {"logits.npz": npz_of({**a, "val_logits": a["val_logits"][:1], "val_labels": labels, "val_ids": ids,
                                  "val_ids_sha256": np.array(digest(ids, labels))})}


def string_ids(a: dict) -> dict:
    return {"logits.npz": npz_of({**a, "val_ids": np.array([f"row{i}" for i in a["val_ids"]])})}


def huge_header(a: dict) -> dict:  # the header claims 10^11 rows; 16 bytes follow it
    rest = {k: v for k, v in a.items() if k != "val_ids"}
    return {"logits.npz": npz_of(rest, {"val_ids.npy": npy_header((10**11,), "<i8") + bytes(16)})}


def three_mb(a: dict) -> dict:
    return {"logits.npz": bomb(a)}


def metrics_edit(kit, change) -> dict:
    metrics = json.loads((kit.repo / "submissions" / "v2" / "metrics.json").read_text())
    return change(metrics)


KINDS = {  # kind -> (what it damages, the words of its one line); a field out of range is read as unknown
    "other rows, the digest kept": ("logits.npz", other_rows, "is not the digest of its val_ids and val_labels"),
    "one row": ("logits.npz", one_row, "holds 1 validation rows, but metrics.json says 2,000"),
    "a 3 MB npz that takes 3.3 GB": ("logits.npz", three_mb, "val_logits claims 104,857,600 rows"),
    "string ids": ("logits.npz", string_ids, "val_ids is not an integer array"),
    "a header claiming 10^11 rows": ("logits.npz", huge_header, "val_ids claims 100,000,000,000 rows"),
    "val_rows 1e300": ("metrics.json", None, "val_rows 1e+300 is out of range (1 to 10,000,000): read as unknown"),
    "200,000 deep": ("metrics.json", None, "holds more than 200,000 objects and lists"),
}
FIELD_ONLY = {"val_rows 1e300"}  # the file is still read: v2 still pairs with v1
METRICS = {
    "val_rows 1e300": lambda m: json.dumps({**m, "val_rows": 1e300}).encode(),
    "200,000 deep": lambda m: (json.dumps(m)[:-1] + ', "history": ' + "[" * 200_000 + "]" * 200_000 + "}").encode(),
}


def damaged(kit, kind: str) -> dict:
    """The damaged files of ``kind`` for v2 (name -> bytes), made from v2's own."""
    name, make, _words = KINDS[kind]
    if make is None:
        return {name: metrics_edit(kit, METRICS[kind])}
    return make(arrays_of(kit, 2))


def lines_naming(err: str, name: str) -> list:
    return [line for line in err.splitlines() if f"v2/{name}" in line]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_damaged_pulled_folder_is_one_line_and_the_other_version_is_shown(kit, kind):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")  # the same validation rows: v1 and v2 pair
    name, _make, words = KINDS[kind]
    files = damaged(kit, kind)
    for file, content in files.items():
        (kit.repo / "submissions" / "v2" / file).write_bytes(content)

    pairs = kind in FIELD_ONLY
    code, out, err = kit.run("versions")
    assert code == 0 and "internal error" not in err
    assert [line[:6] for line in out.splitlines()[1:]] == ["v2    ", "v1    "]
    (line,) = lines_naming(err, name)
    assert line.startswith("lorakit: warning: v2 is damaged:") and words in line, err
    code, out, err = kit.run("versions", "--json")
    shown = {row["version"]: row for row in json.loads(out)["versions"]}
    assert shown[1]["not_comparable"] is None and shown[1]["val_accuracy"] and shown[2]["val_rows"] in (None, 2000)
    assert (shown[2]["not_comparable"] is None) if pairs else words in shown[2]["not_comparable"]

    code, out, err = kit.run("compare", 1, 2)
    assert code == 0 and "internal error" not in err
    (line,) = [line for line in lines_naming(out, name) if line.startswith("v2")]  # the paired test says why too
    assert words in line and ("paired test on the 2000 shared" if pairs else "paired test: none") in out
    assert line.startswith("v2: " if pairs else "v2 is not comparable: ")
    assert "test set: v1 vs v2" in out  # the parts that can still be had

    code, out, err = kit.run("report")
    assert code == 0 and "internal error" not in err
    (line,) = lines_naming(err, name)
    assert line.startswith("lorakit: note: v2" + (":" if pairs else " not comparable:")) and words in line

    for file, content in files.items():  # Kaggle serves the damaged file: pull reads what it wrote
        versions(kit)[1].outputs[file] = content
    code, out, err = kit.run("pull", 2)
    assert code == 0 and "internal error" not in err and "pulled v2" in out
    (line,) = lines_naming(err, name)
    assert line.startswith("lorakit: warning: v2:") and words in line, err

    code, out, err = kit.run("sync")
    assert code == 0 and "internal error" not in err and "v1       unchanged" in out, err
    if name == "metrics.json":  # sync reads metrics.json alone of the outputs
        (line,) = [line for line in err.splitlines() if "metrics.json" in line]
        assert line.startswith("lorakit: warning: v2: its metrics.json") and words in line


def peak_mb(kit, *argv) -> float:
    """The peak resident memory of one `lorakit ...` process, in MB (ru_maxrss of that child alone)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "lorakit", *map(str, argv)], cwd=kit.repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024  # kilobytes on Linux


@pytest.mark.slow  # lorakit processes, each loading the kernel
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="os.wait4 measures one child's peak memory")
def test_a_3_mb_file_adds_well_under_200_mb_to_a_commands_peak_memory(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    folder = kit.repo / "submissions" / "v2"
    baseline = peak_mb(kit, "versions")
    (folder / "logits.npz").write_bytes(three_mb(arrays_of(kit, 2))["logits.npz"])
    assert 2.5 < (folder / "logits.npz").stat().st_size / 2**20 < 3.5
    npz = peak_mb(kit, "versions")
    metrics = json.loads((folder / "metrics.json").read_text())
    numbers = ",".join(["0.123456"] * 380_000)  # 3 MB of numbers: one list, longer than any metric's
    (folder / "metrics.json").write_text(json.dumps(metrics)[:-1] + f', "loss_curve": [{numbers}]}}')
    assert 2.5 < (folder / "metrics.json").stat().st_size / 2**20 < 3.5
    big_json = peak_mb(kit, "versions")
    print(f"peak memory of lorakit versions: {baseline:.0f} MB; with the 3 MB npz {npz:.0f} MB; with the 3 MB "
          f"metrics.json {big_json:.0f} MB")
    assert npz - baseline < 200 and big_json - baseline < 200


@pytest.mark.parametrize("text, words", [
    ("[" * 150_000 + "]" * 150_000, "is nested deeper than a run's metrics.json"),  # Python's parser gives up
    ('{"a": ' + "[" * 33 + "]" * 33 + "}", "it is nested deeper than 32 levels"),
    ('{"a": [' + ",".join(["1"] * 100_001) + "]}", "holds 100,001 entries"),
    ('{"a": 1' + "0" * 5000 + "}", "is not a JSON object \\(cut short"),  # Python refuses 5,000 digits
    ('{"a": [1e300]}', "holds the number 1e\\+300, beyond any metric"),
])
def test_metrics_json_is_bounded_before_and_after_parsing(text, words):
    from lorakit.common import metrics_parse
    from lorakit.errors import UsageError

    with pytest.raises(UsageError, match=words):
        metrics_parse(text.encode(), "m.json")


def test_a_metrics_field_of_the_wrong_type_or_range_is_read_as_unknown_and_named():
    from lorakit.common import metrics_parse

    problems: list = []
    raw = (b'{"val_accuracy": "high", "history": {}, "val_rows": -3, "trainable_params": 12.5, "x": NaN, "y": 1e999,'
           b' "loss_curve": [{"step": 25, "epoch": 0.1, "loss": Infinity}], "test_rows": 8000}')
    assert metrics_parse(raw, "m.json", problems) == {"x": None, "y": None, "test_rows": 8000,
                                                      "loss_curve": [{"step": 25, "epoch": 0.1, "loss": None}]}
    assert problems == ["m.json: history is not a JSON list: read as unknown",
                        "m.json: val_accuracy 'high' is not a number: read as unknown",
                        "m.json: val_rows -3 is out of range (1 to 10,000,000): read as unknown",
                        "m.json: trainable_params '12.5' is not an integer: read as unknown"]
