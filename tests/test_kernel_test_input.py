"""The competition's test file is untrusted input: allow-listed unpickling, expected shapes, one unambiguous file.

The fixture pickles in fixtures/pickles/ were written by datasets 3.6.0, 4.8.5 and 5.2.0 and pandas 2.3.3 and
3.1.1 (fixtures/make_pickles.py says how); every venv of `make test` loads every one of them (but one that pandas 2
itself cannot read: the reader unpickles through the installed libraries). Hostile files are
written opcode by opcode below, so that they hold exactly what an attacker would put there, whatever is installed.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import struct
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from kernel_helpers import FIXTURES, run_kernel, write_test_pickle, write_train_csv


PICKLES = FIXTURES / "pickles"
FIXTURE_TEXTS = ["first row", "second (AP) row", "Z\u00fcrich third \u65e5\u672c"]
ACCEPTED = sorted(p.name for p in PICKLES.glob("*.pkl") if not p.name.startswith("refused-"))


def write_pickle(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path


class RunsACommand:
    """What an attacker puts in a pickle: unpickling calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text):
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def op_bytes(data):
    return b"B" + len(data).to_bytes(4, "little") + data


def op_int(n):
    return b"\x8a\x09" + n.to_bytes(9, "little", signed=True)  # LONG1


NONE = b"N"


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def op_list(*items):
    return b"(" + b"".join(items) + b"l"


def op_dict(**items):
    return b"(" + b"".join(op_str(key) + value for key, value in items.items()) + b"d"


def op_call(module, name, *args):
    return op_global(module, name) + op_tuple(*args) + b"R"


def op_new(module, name):
    """An object of a class made as pickle makes one: cls.__new__(cls), its state set after (BUILD)."""
    return op_global(module, name) + b")\x81"


def as_pickle(body):
    return b"\x80\x04" + body + b"."


def arrow_type(alias="string"):
    return op_call("pyarrow.lib", "type_for_alias", op_str(alias))


def py_buffer(data):
    return op_call("pyarrow.lib", "py_buffer", op_bytes(data))


def arrow_strings(offsets, data, *, alias="string", length=None, buffers=None, children=()):
    """An arrow string array as pyarrow pickles one: _restore_array((type, length, nulls, offset, buffers, ...))."""
    raw = struct.pack(f"<{len(offsets)}{'q' if alias == 'large_string' else 'i'}", *offsets)
    buffers = [NONE, py_buffer(raw), py_buffer(data)] if buffers is None else buffers
    length = len(offsets) - 1 if length is None else length
    return op_call("pyarrow.lib", "_restore_array", op_tuple(
        arrow_type(alias), op_int(length), op_int(0), op_int(0), op_list(*buffers), op_list(*children), NONE))


def dataset(chunks, alias="string"):
    """A datasets.Dataset as datasets pickles one, its one column `text` holding `chunks` (opcodes)."""
    column = op_call("pyarrow.lib", "chunked_array", op_list(chunks), arrow_type(alias))
    field = op_call("pyarrow.lib", "field", op_str("text"), arrow_type(alias))
    table = op_call("pyarrow.lib", "_reconstruct_table", op_list(column),
                    op_call("pyarrow.lib", "schema", op_list(field), NONE))
    data = op_new("datasets.table", "InMemoryTable") + op_dict(table=table) + b"b"
    state = op_dict(_data=data, _indices=NONE, _format_type=NONE, _format_columns=NONE)
    return as_pickle(op_new("datasets.arrow_dataset", "Dataset") + state + b"b")


TEXT_BYTES = "".join(FIXTURE_TEXTS).encode()
TEXT_ENDS = [0, 9, 24, 44]


def write_bytes(path, data):
    path.write_bytes(data)
    return path


def refused(kernel, path, message):
    """The one-line DataError that loading `path` gives (the kernel's exit 2), checked against `message`."""
    with pytest.raises(kernel.DataError) as info:
        kernel.load_test_texts(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text, text
    assert __import__("re").search(message, text), text
    return text


DEEP = 200_000


GIB3 = 3 * 10**9
MORE_MEMORY = r"needs more memory to read than a test file may \(64 MiB more than 3 times its size\)"
TRUNCATED = r"cannot unpickle .*: pickle data was truncated"


def put(root, *parts):
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pickle(path, {"text": ["x"]})
    return path


def test_fixtures_cover_every_library_version():
    written = {name.split("-")[0] + "-" + name.split("-")[1].removesuffix(".pkl") for name in ACCEPTED}
    assert written == {"datasets-3.6.0", "datasets-4.8.5", "datasets-5.2.0", "pandas-2.3.3", "pandas-3.1.1"}


@pytest.mark.compat
@pytest.mark.parametrize("name", ACCEPTED)
def test_every_fixture_pickle_loads_in_id_order(kernel, name):
    if name == "pandas-3.1.1-string-python.pkl" and int(pd.__version__.split(".")[0]) < 3:
        # pandas 2 cannot read pandas 3's python-backed string array (pandas' own limit): one line, no more
        refused(kernel, PICKLES / name, r"^cannot unpickle .*: NotImplementedError: \(string\[python\], array")
        return
    assert kernel.load_test_texts(PICKLES / name) == FIXTURE_TEXTS


@pytest.mark.compat
@pytest.mark.parametrize("name, message", [
    ("refused-datasets-4.8.5-memory-mapped.pkl", r"refused to load datasets\.table\.MemoryMappedTable"),
    ("refused-datasets-4.8.5-indices.pkl", r"is a Dataset view \(select/shuffle/filter.*flatten_indices"),
    ("refused-datasets-4.8.5-format.pkl", r"is a Dataset view \(.*a format set: numpy\); save .*with_format\(None\)"),
])
def test_dataset_shapes_that_would_mislead_are_refused(kernel, name, message):
    with pytest.raises(kernel.DataError, match=message):
        kernel.load_test_texts(PICKLES / name)


@pytest.mark.compat
def test_a_malicious_pickle_runs_no_code(kernel, tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "test_unlabelled.pkl", {"text": ["x"], "payload": RunsACommand(marker)})
    with pytest.raises(kernel.DataError) as info:
        kernel.load_test_texts(path)
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and f"cannot unpickle {path}" in message
    assert f"refused to load {os.system.__module__}.system" in message  # names the global


@pytest.mark.parametrize("obj", [
    pd.Timestamp("2025-01-01"),  # pandas, but not a data frame
    __import__("collections").OrderedDict(text=["x"]),
    {"text": ["x"], "when": __import__("datetime").date(2025, 1, 1)},
], ids=["pandas-timestamp", "ordered-dict", "dict-with-a-date"])
def test_globals_outside_the_allow_list_are_refused(kernel, tmp_path, obj):
    with pytest.raises(kernel.DataError, match="refused to load"):
        kernel.load_test_texts(write_pickle(tmp_path / "t.pkl", obj))


@pytest.mark.parametrize("obj, message", [
    ({"body": ["x"]}, r"has no column 'text' that holds a list \(columns: body\)"),
    (pd.DataFrame({"text": []}), r"has no rows"),
    ([1, 2, 3], r"holds a list; expected a datasets.Dataset"),
    ({"text": ["ok", None]}, r"row 1 of 'text' is NoneType"),
    ({"text": "one string"}, r"has no column 'text' that holds a list \(columns: text\)"),
    (pd.DataFrame({"text": ["a", 1.5]}), r"row 1 of 'text' is float, not a string"),
    (pd.DataFrame([["a", "b"]], columns=["text", "text"]),
     r"has no column 'text' that holds a list \(columns: text, text\)"),
])
def test_unexpected_shapes_get_one_line(kernel, tmp_path, obj, message):
    with pytest.raises(kernel.DataError, match=message):
        kernel.load_test_texts(write_pickle(tmp_path / "t.pkl", obj))


@pytest.mark.compat
@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("frame", [
    pd.DataFrame({"a": ["x", "y", "z"], "text": FIXTURE_TEXTS, "b": ["u", "v", "w"]}),  # one block, row 1
    pd.DataFrame({"a": list("xyz"), "n": [1, 2, 3], "b": list("uvw"), "text": FIXTURE_TEXTS}),  # a block at [0, 2, 3]
    pd.DataFrame({"n": [1, 2, 3], "text": FIXTURE_TEXTS}, index=[2, 0, 1]),  # IDs are positions, not the index
    pd.DataFrame({"text": pd.Series(FIXTURE_TEXTS, dtype="string")}),
], ids=["consolidated-block", "split-block", "shuffled-index", "string-dtype"])
def test_dataframes_written_by_this_pandas(kernel, tmp_path, frame, protocol):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(frame, protocol=protocol))
    assert kernel.load_test_texts(path) == FIXTURE_TEXTS


def test_a_record_with_another_layout_is_one_line(kernel, tmp_path):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(pd.DataFrame({"text": ["x"]})).replace(b"_mgr", b"_xyz"))
    with pytest.raises(kernel.DataError, match=r"cannot unpickle .*: AttributeError: .*'_mgr'"):
        kernel.load_test_texts(path)


def test_dataset_with_a_non_string_text_column(kernel, tmp_path):
    datasets = pytest.importorskip("datasets")
    path = write_pickle(tmp_path / "t.pkl", datasets.Dataset.from_dict({"text": [1, 2]}))
    with pytest.raises(kernel.DataError, match=r"row 0 of 'text' is int, not a string"):
        kernel.load_test_texts(path)


def test_empty_and_garbage_files(kernel, tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(kernel.DataError, match="is empty"):
        kernel.load_test_texts(empty)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(kernel.DataError, match="cannot unpickle"):
        kernel.load_test_texts(garbage)


@pytest.mark.compat
def test_the_real_competition_file_loads(kernel, shared_dir):
    texts = kernel.load_test_texts(shared_dir / "data" / "test_unlabelled.pkl")
    assert len(texts) == 8000 and all(isinstance(t, str) and t for t in texts)


@pytest.mark.compat
def test_a_dataset_written_opcode_by_opcode_loads(kernel, tmp_path):
    """The hostile files below differ from this one only in what they break."""
    assert kernel.load_test_texts(write_bytes(tmp_path / "t.pkl", dataset(arrow_strings(TEXT_ENDS, TEXT_BYTES)))) \
        == FIXTURE_TEXTS


@pytest.mark.compat
@pytest.mark.parametrize("chunk, message", [  # arrow's own validation words most of them
    (arrow_strings([0, 9, 24, 4400], TEXT_BYTES), r"Offset invariant failure: offset for slot 3 out of bounds"),
    (arrow_strings([0, 9, 2**31 - 1, 44], TEXT_BYTES), r"Offset invariant failure: offset for slot 2 out of bounds"),
    (arrow_strings([0, 24, 9, 44], TEXT_BYTES), r"Offset invariant failure: non-monotonic offset"),
    (arrow_strings([-9, 9, 24, 44], TEXT_BYTES), r"Offset invariant failure: array starts at negative offset"),
    (arrow_strings(TEXT_ENDS, TEXT_BYTES, buffers=[NONE]), r"not the layout of 3 DataType\(string\)"),
    (arrow_strings(TEXT_ENDS, TEXT_BYTES, buffers=[NONE, NONE, NONE]), r"Value data buffer is null"),
    (arrow_strings(TEXT_ENDS, TEXT_BYTES, length=1000), r"Buffer #1 too small in array of type string and length 1000"),
    (arrow_strings(TEXT_ENDS, TEXT_BYTES, buffers=[py_buffer(b""), py_buffer(b"\0" * 16), py_buffer(TEXT_BYTES)]),
     r"not the layout of 3 DataType\(string\)"),
    (arrow_strings(TEXT_ENDS, TEXT_BYTES, children=[NONE]), r"not the layout of 3 DataType\(string\)"),
    (arrow_strings(TEXT_ENDS, b"\xff" * 44), r"Invalid UTF8 sequence"),
    (arrow_strings(TEXT_ENDS, TEXT_BYTES, alias="int64"), r"not the layout of 3 DataType\(int64\)"),
    (op_str("not an array"), r"a chunk that is no array"),
], ids=["offsets-past-the-buffer", "wild-offset", "offsets-backwards", "negative-offset", "missing-buffers",
        "null-buffers", "length-past-the-offsets", "short-validity-bitmap", "children", "invalid-utf8",
        "int-chunk", "not-an-array"])
def test_malformed_arrow_arrays_are_refused_before_a_value_is_read(kernel, tmp_path, chunk, message):
    refused(kernel, write_bytes(tmp_path / "t.pkl", dataset(chunk)), r"malformed arrow array: " + message)


@pytest.mark.compat
@pytest.mark.parametrize("name", ["pandas-2.3.3-string-pyarrow.pkl", "pandas-3.1.1-string-pyarrow.pkl"])
@pytest.mark.parametrize("last_offset", [4400, 2**60], ids=["past-the-buffer", "wild"])
def test_a_dataframe_column_with_offsets_past_its_buffer(kernel, tmp_path, name, last_offset):
    """Until this was checked, the first read heap memory past the buffer and the second ended the kernel."""
    data = (PICKLES / name).read_bytes()
    for fmt in ("<4i", "<4q"):  # string or large_string offsets
        data = data.replace(struct.pack(fmt, *TEXT_ENDS), struct.pack(fmt, *TEXT_ENDS[:3], min(last_offset, 2**31 - 1)
                                                                       if fmt == "<4i" else last_offset))
    assert data != (PICKLES / name).read_bytes()
    refused(kernel, write_bytes(tmp_path / "t.pkl", data), r"malformed arrow array: Offset invariant failure: "
                                                           r"offset for slot 3 out of bounds")


@pytest.mark.compat
@pytest.mark.parametrize("body, message", [
    # {((((...)))): 1}: hashing the key recurses in C until the reading child dies of SIGSEGV; the kernel lives on
    (b"}" + b")" + b"\x85" * DEEP + b"K\x01s", r"reading it killed the reading process \(SIGSEGV\); the file is "
                                               r"malformed or hostile"),
    (b"}" + op_str("text") + b"(" * DEEP + b"]" + b"l" * DEEP + b"s", r"row 0 of 'text' is list, not a string"),
], ids=["deep-key", "deep-value"])
def test_deep_nesting_is_one_line(kernel, tmp_path, body, message):
    refused(kernel, write_bytes(tmp_path / "t.pkl", as_pickle(body)), message)


@pytest.mark.compat
def test_a_dict_key_that_is_not_a_string_is_refused(kernel, tmp_path):
    refused(kernel, write_bytes(tmp_path / "t.pkl", as_pickle(b"}" + op_tuple(op_str("text")) + b"K\x01s")),
            r"has no column 'text' that holds a list \(columns: \('text',\)\)")


@pytest.mark.compat
@pytest.mark.parametrize("data, message", [
    (b"\x80\x05\x8e" + GIB3.to_bytes(8, "little") + b".", MORE_MEMORY),
    (b"\x80\x05\x96" + GIB3.to_bytes(8, "little") + b".", MORE_MEMORY),
    (b"\x80\x04\x8d" + GIB3.to_bytes(8, "little") + b".", TRUNCATED),
    (b"\x80\x04\x8b" + (2**31 - 1).to_bytes(4, "little") + b".", TRUNCATED),
    (b"\x80\x04\x95" + GIB3.to_bytes(8, "little") + b"N.", TRUNCATED),
    (b"\x80\x04Nr" + (2**31 - 1).to_bytes(4, "little") + b".", MORE_MEMORY),
    (as_pickle(op_call("builtins", "bytearray", op_int(GIB3))), MORE_MEMORY),
    (as_pickle(op_dict(text=op_call("numpy", "ndarray", op_tuple(op_int(GIB3)), op_str("u1")))), MORE_MEMORY),
    (dataset(arrow_strings([0, 0], b"", length=GIB3)), r"malformed arrow array: Buffer #1 too small"),
], ids=["bytes8", "bytearray8", "unicode8", "long4", "frame", "memo-index", "bytearray-call", "ndarray-call",
        "arrow-length"])
def test_a_tiny_file_cannot_make_the_reader_allocate_gigabytes(kernel, tmp_path, monkeypatch, data, message):
    """Each asks for 3 GB (or a memo of 2**31 slots, 16 GB written at once); the reading child, allowed 64 MiB
    more than it maps, is refused the allocation or finds the data truncated first, and says so in one line."""
    assert len(data) < 1000
    monkeypatch.setattr(kernel, "TEST_LOAD_MEMORY", 64 << 20)
    refused(kernel, write_bytes(tmp_path / "t.pkl", data), message)


@pytest.mark.compat
def test_a_1mb_file_cannot_expand_to_gigabytes_of_text(kernel, tmp_path):
    big = "x" * 2**20
    by_reference = pickle.dumps({"text": [big] * 20_000})  # one string, 20,000 references to it: 20 GB of text
    assert len(by_reference) < 1.1 * 2**20
    refused(kernel, write_bytes(tmp_path / "dict.pkl", by_reference), r"more than 256 MiB of text")
    chunk = arrow_strings([0, 2**20], big.encode())
    repeated = dataset(chunk + b"\x94" + b"h\x00" * 19_999)  # the same chunk 20,000 times through the memo
    assert len(repeated) < 1.1 * 2**20
    refused(kernel, write_bytes(tmp_path / "arrow.pkl", repeated), r"more than 256 MiB of text")


@pytest.mark.compat
def test_row_and_file_size_limits(kernel, tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "TEST_MAX_ROWS", 2)
    refused(kernel, write_pickle(tmp_path / "rows.pkl", {"text": ["a", "b", "c"]}), r"more than 2 rows")
    monkeypatch.setattr(kernel, "TEST_MAX_FILE_BYTES", 100)
    refused(kernel, PICKLES / "datasets-4.8.5.pkl", r"is larger than 100 bytes, the most a test file may be")


@pytest.mark.compat
def test_a_reader_killed_by_a_signal_is_one_line(kernel, tmp_path):
    """Whatever still crashes the reading child is one line here, and the kernel lives on. The test file is a FIFO:
    the child waits on it for data, and is killed there."""
    children = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")
    if not children.exists():
        pytest.skip("no /proc/PID/task/TID/children here")
    fifo = tmp_path / "test.pkl"
    os.mkfifo(fifo)
    earlier = set(children.read_text().split())  # e.g. multiprocessing's resource tracker: not the reader

    def kill_the_reader():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # opens once the reading child opened the FIFO
            except OSError:
                time.sleep(0.01)
                continue
            for pid in set(children.read_text().split()) - earlier:
                os.kill(int(pid), signal.SIGSEGV)
            os.close(writer)
            return

    thread = threading.Thread(target=kill_the_reader)
    thread.start()
    try:
        with pytest.raises(kernel.DataError) as info:
            kernel.load_test_texts(fifo)
    finally:
        thread.join()
    assert str(info.value) == (f"cannot unpickle {fifo}: reading it killed the reading process (SIGSEGV); the file "
                               "is malformed or hostile")


@pytest.mark.compat
def test_a_reader_that_takes_too_long_is_one_line(kernel, tmp_path, monkeypatch):
    """The reading child has TEST_LOAD_SECONDS: here it waits on a FIFO that no one writes to until SIGALRM."""
    fifo = tmp_path / "test.pkl"
    os.mkfifo(fifo)
    monkeypatch.setattr(kernel, "TEST_LOAD_SECONDS", 1)
    refused(kernel, fifo, r"^cannot unpickle .*: reading it took more than 1 s, the most a test file may take$")


@pytest.mark.slow
def test_the_kernel_ends_with_one_line_on_a_hostile_file(tmp_path):
    """The file that ended the kernel with SIGSEGV (exit 139, no message) is exit 2 and one line: only the reading
    child dies of it."""
    path = write_bytes(tmp_path / "test_unlabelled.pkl", as_pickle(b"}" + b")" + b"\x85" * DEEP + b"K\x01s"))
    proc = run_kernel("smoke=true", f"test_data={path}", f"output_dir={tmp_path / 'out'}", tmpdir=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: cannot unpickle {path}: reading it killed the reading "
                                               "process (SIGSEGV); the file is malformed or hostile"]
    assert not (tmp_path / "out").exists()


def test_the_competition_folder_wins_over_a_shadowing_dataset(kernel, tmp_path):
    shadow = put(tmp_path, "aaa-some-dataset", "test_unlabelled.pkl")  # sorts first
    own = put(tmp_path, kernel.COMPETITION, "test_unlabelled.pkl")
    assert kernel.find_test_file(tmp_path) == own
    own.unlink()
    assert kernel.find_test_file(tmp_path) == shadow  # absent from the competition folder: the one candidate
    other = put(tmp_path, "zzz-other", "deep", "test_unlabelled.pkl")
    with pytest.raises(kernel.DataError) as info:
        kernel.find_test_file(tmp_path)
    assert str(shadow) in str(info.value) and str(other) in str(info.value)
    assert "2 candidate test_unlabelled.pkl files" in str(info.value) and "--set test_data=PATH" in str(info.value)
    newer = put(tmp_path, "competitions", kernel.COMPETITION, "test_unlabelled.pkl")
    assert kernel.find_test_file(tmp_path) == newer


def test_a_missing_test_file_says_what_to_do(kernel, tmp_path, monkeypatch):
    (tmp_path / "ag-news").mkdir()
    (tmp_path / "ag-news" / "train.csv").write_text("Class Index,Title,Description\n")
    with pytest.raises(kernel.DataError, match=r"pass --set test_data=PATH \(kaggle competitions download -c "
                                               r"deep-learning-spring-2025-project-2\)"):
        kernel.find_test_file(tmp_path)
    monkeypatch.setenv("AGNEWS_ON_KAGGLE", "1")
    with pytest.raises(kernel.DataError, match=r"attach the competition .*Found: .*ag-news/train.csv"):
        kernel.find_test_file(tmp_path)


def test_the_kind_of_test_file(kernel, tmp_path, monkeypatch, capsys):
    """competition: the file at the competition's mount path, however it was named; other: anything else, with a
    warning when the competition is not attached and another dataset's file is taken."""
    train = write_train_csv(tmp_path / "train.csv")
    root = tmp_path / "input"
    monkeypatch.setattr(kernel, "KAGGLE_INPUT", root)
    cfg = kernel.Config(train_data=str(train))
    for own in kernel.competition_test_files(root):
        write_test_pickle(own)
        inputs = kernel.resolve_inputs(cfg, tmp_path)
        assert (inputs.test, inputs.test_kind) == (own, "competition")
        assert inputs.predicted_on(60) == {"kind": "competition", "path": str(own),
                                           "sha256": hashlib.sha256(own.read_bytes()).hexdigest(), "rows": 60}
        explicit = kernel.resolve_inputs(kernel.dataclasses.replace(cfg, test_data=str(own)), tmp_path)
        assert explicit.test_kind == "competition"
        own.unlink()
    assert "not attached" not in capsys.readouterr().err
    other = write_test_pickle(root / "someone-else" / "test_unlabelled.pkl")
    inputs = kernel.resolve_inputs(cfg, tmp_path)
    assert (inputs.test, inputs.test_kind) == (other, "other")
    assert (f"warning: the competition {kernel.COMPETITION} is not attached: reading {other}, another dataset's "
            "file; attach the competition (competition_sources) before submitting") in capsys.readouterr().err
    assert "NOT the competition's file" in inputs.describe()
    smoke = kernel.resolve_inputs(kernel.config_from_overrides({"smoke": True, "test_data": str(other)}), tmp_path)
    assert smoke.test_kind == "smoke" and smoke.describe() == (
        f"SMOKE RUN: tiny random encoder, test data {other} -- not a submission")


def test_invalid_unicode_on_the_smoke_path(run_main, tmp_path):
    test_pkl = write_test_pickle(tmp_path / "test.pkl", rows=50, broken=4)
    train = write_train_csv(tmp_path / "train.csv", rows_per_class=30, broken=1)
    code, _, err = run_main("smoke=true", "epochs=1", f"train_data={train}", f"test_data={test_pkl}",
                            f"output_dir={tmp_path / 'out'}")
    assert code == 0, err[-3000:]
    assert "warning: 4 test row(s) were not valid Unicode" in err and f"1 line(s) of {train} were not valid" in err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["predicted_on"]["kind"] == "smoke"


def test_real_weights_on_the_competition_file_with_invalid_unicode(kernel, minilm_path, run_main, tmp_path,
                                                                   monkeypatch):
    """The real path (pretrained weights, not smoke): the competition's file at its mount path, with rows that
    are not valid Unicode in the test pickle and the training CSV, repaired and counted."""
    root = tmp_path / "input"
    test_file = write_test_pickle(kernel.competition_test_files(root)[0], rows=60, broken=3)
    monkeypatch.setattr(kernel, "KAGGLE_INPUT", root)
    train = write_train_csv(tmp_path / "train.csv", broken=2)
    code, out, err = run_main(f"model={minilm_path}", f"train_data={train}", "epochs=1", "val_fraction=0.25",
                              f"output_dir={tmp_path / 'out'}")
    assert code == 0, err[-3000:]
    assert "warning: 3 test row(s) were not valid Unicode; the invalid characters became U+FFFD" in err
    assert f"warning: 2 line(s) of {train} were not valid UTF-8; the invalid bytes became U+FFFD" in err
    assert "Traceback" not in err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["predicted_on"] == {"kind": "competition", "path": str(test_file),
                                       "sha256": hashlib.sha256(test_file.read_bytes()).hexdigest(), "rows": 60}
    assert metrics["model"] == str(minilm_path) and "SMOKE" not in out
    assert f"predicting on {test_file} (the competition's test file, sha256 " in out.strip().splitlines()[-1]
    kernel.validate_submission(tmp_path / "out" / "submission.csv", 60)
