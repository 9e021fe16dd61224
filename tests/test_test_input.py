"""The competition's test file is untrusted input: allow-listed unpickling, expected shapes, one unambiguous file.

The fixture pickles in fixtures/pickles/ were written by datasets 3.6.0, 4.8.5 and 5.2.0 and pandas 2.3.3 and
3.1.1 (fixtures/make_pickles.py says how); every venv of `make test` loads every one of them.
"""
from __future__ import annotations

import os
import pickle

import pandas as pd
import pytest

from conftest import FIXTURES

PICKLES = FIXTURES / "pickles"
FIXTURE_TEXTS = ["first row", "second (AP) row", "Z\u00fcrich third \u65e5\u672c"]
ACCEPTED = sorted(p.name for p in PICKLES.glob("*.pkl") if not p.name.startswith("refused-"))


def write_pickle(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path


def test_fixtures_cover_every_library_version():
    written = {name.split("-")[0] + "-" + name.split("-")[1].removesuffix(".pkl") for name in ACCEPTED}
    assert written == {"datasets-3.6.0", "datasets-4.8.5", "datasets-5.2.0", "pandas-2.3.3", "pandas-3.1.1"}


@pytest.mark.compat
@pytest.mark.parametrize("name", ACCEPTED)
def test_every_fixture_pickle_loads_in_id_order(kernel, name):
    assert kernel.load_test_texts(PICKLES / name) == FIXTURE_TEXTS


@pytest.mark.compat
@pytest.mark.parametrize("name, message", [
    ("refused-datasets-4.8.5-memory-mapped.pkl", r"refused to load datasets\.table\.MemoryMappedTable"),
    ("refused-datasets-4.8.5-indices.pkl", r"a Dataset view with an indices mapping .*flatten_indices"),
    ("refused-datasets-4.8.5-format.pkl", r"a Dataset with a format set \(numpy\)"),
])
def test_dataset_shapes_that_would_mislead_are_refused(kernel, name, message):
    with pytest.raises(kernel.DataError, match=message):
        kernel.load_test_texts(PICKLES / name)


class RunsACommand:
    """What an attacker puts in a pickle: unpickling calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


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
    ({"body": ["x"]}, r"has no 'text' column \(columns: body\)"),
    (pd.DataFrame({"text": []}), r"has no rows"),
    ([1, 2, 3], r"holds a list; expected a datasets.Dataset"),
    ({"text": ["ok", None]}, r"row 1 of 'text' is NoneType"),
    ({"text": "one string"}, r"'text' must be a list of strings, got str"),
    (pd.DataFrame({"text": ["a", 1.5]}), r"row 1 of 'text' is float, not a string"),
    (pd.DataFrame([["a", "b"]], columns=["text", "text"]), r"several columns named 'text'"),
])
def test_unexpected_shapes_get_one_line(kernel, tmp_path, obj, message):
    with pytest.raises(kernel.DataError, match=message):
        kernel.load_test_texts(write_pickle(tmp_path / "t.pkl", obj))


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"a": ["x", "y", "z"], "text": FIXTURE_TEXTS, "b": ["u", "v", "w"]}),  # one block, row 1
    pd.DataFrame({"n": [1, 2, 3], "text": FIXTURE_TEXTS}, index=[2, 0, 1]),  # IDs are positions, not the index
    pd.DataFrame({"text": pd.Series(FIXTURE_TEXTS, dtype="string")}),
], ids=["consolidated-block", "shuffled-index", "string-dtype"])
def test_dataframes_written_by_this_pandas(kernel, tmp_path, frame):
    assert kernel.load_test_texts(write_pickle(tmp_path / "t.pkl", frame)) == FIXTURE_TEXTS


def test_a_record_with_another_layout_is_one_line(kernel, tmp_path):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(pd.DataFrame({"text": ["x"]})).replace(b"_mgr", b"_xyz"))
    with pytest.raises(kernel.DataError, match=r"does not have the layout of a Dataset or DataFrame \(KeyError"):
        kernel.load_test_texts(path)


def test_dataset_with_a_non_string_text_column(kernel, tmp_path):
    datasets = pytest.importorskip("datasets")
    path = write_pickle(tmp_path / "t.pkl", datasets.Dataset.from_dict({"text": [1, 2]}))
    with pytest.raises(kernel.DataError, match=r"the 'text' column holds int64, not strings"):
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


# ------------------------------------------------------------------------------------- which file
def put(root, *parts):
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pickle(path, {"text": ["x"]})
    return path


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
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    with pytest.raises(kernel.DataError, match=r"pass --set test_data=PATH \(kaggle competitions download -c "
                                               r"deep-learning-spring-2025-project-2\)"):
        kernel.find_test_file(tmp_path)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    with pytest.raises(kernel.DataError, match=r"attach the competition .*Found: .*ag-news/train.csv"):
        kernel.find_test_file(tmp_path)
