"""The training data: cleaning, finding the attached AG News CSV, its errors, the stratified split, augmentation."""
from __future__ import annotations

import random
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from kernel_helpers import snapshot


@pytest.mark.parametrize("raw, clean", [
    ("Oil hits #36;50 a barrel", "Oil hits $50 a barrel"),
    ("Bush #39;s plan", "Bush's plan"),
    ("worth  #36;3\\billion", "worth $3 billion"),
    ("Texas Instruments Inc. &lt;TXN.N&gt;, rose", "Texas Instruments Inc. <TXN.N>, rose"),
    ('&lt;a href="http://x.com/y"&gt;link&lt;/a&gt;', "link"),
    ("&lt;b&gt;Breaking&lt;/b&gt; news", "Breaking news"),
    ("AT&amp;amp;T earnings", "AT&T earnings"),
    ("Wall St.\\Bears claw back", "Wall St. Bears claw back"),
    ("see http://www.reuters.com/news/x?id=1 now", "see reuters.com now"),
    ("  many \t spaces \n here ", "many spaces here"),
    ("Stocks rise (Reuters) - Zürich café", "Stocks rise (Reuters) - Zürich café"),
    ("AP - Les Échos: 日本 (photo)", "AP - Les Échos: 日本 (photo)"),
])
def test_clean_text(kernel, raw, clean):
    assert kernel.clean_text(raw) == clean


def test_clean_text_repairs_lone_surrogates(kernel):
    assert kernel.clean_text("a\ud800b \udfff") == "a\ufffdb \ufffd"
    assert kernel.clean_text("Zürich 日本 \ufffd") == "Zürich 日本 \ufffd"  # valid text is untouched


def test_train_source_auto_takes_the_one_attached_ag_news_csv(kernel, tmp_path):
    folder = tmp_path / "ag-news-classification-dataset"
    folder.mkdir()
    pd.DataFrame({"Class Index": [3, 1], "Title": ["T1", "T2"], "Description": ["d1", "d2"]}).to_csv(
        folder / "train.csv", index=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("id,x\n1,2\n")  # not AG News: no candidate
    source = kernel.find_train_source(tmp_path)
    assert source == str(folder / "train.csv")
    frame = kernel.load_train_frame(source)
    assert frame["text"].tolist() == ["T1 d1", "T2 d2"] and frame["label"].tolist() == [2, 0]
    shutil.copytree(folder, tmp_path / "shadow")
    with pytest.raises(kernel.DataError, match=r"2 candidate train.csv files under .*--set train_data=PATH"):
        kernel.find_train_source(tmp_path)
    assert kernel.find_train_source(tmp_path / "nothing-here") == "hf:ag_news"


def test_train_csv_errors(kernel, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,text\n1,x\n")
    with pytest.raises(kernel.DataError, match="lacks column"):
        kernel.read_ag_news_csv(bad)
    bad.write_text("Class Index,Title,Description\n5,a,b\n")
    with pytest.raises(kernel.DataError, match="must hold 1-4"):
        kernel.read_ag_news_csv(bad)


def test_stratified_split_holds_out_every_class(kernel):
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    train, val = kernel.stratified_split(labels, 0.1, seed=3)
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [10, 20, 30, 40]
    again = kernel.stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(val, again[1])


def test_augment_changes_text_reproducibly(kernel):
    text = "Stocks rallied on Monday as investors cheered strong quarterly earnings from retailers."
    outputs = [kernel.augment_text(text, random.Random(seed)) for seed in range(20)]
    assert all(o != text for o in outputs)
    assert outputs == [kernel.augment_text(text, random.Random(seed)) for seed in range(20)]


@pytest.mark.slow
def test_one_class_training_data_is_refused_before_training(run_main, used_output, tmp_path):
    before = snapshot(used_output)
    csv = tmp_path / "train.csv"
    pd.DataFrame({"Class Index": [2] * 50, "Title": ["t"] * 50, "Description": ["match report"] * 50}).to_csv(
        csv, index=False)
    code, out, err = run_main("smoke=true", f"train_data={csv}", f"output_dir={used_output}")
    assert code == 2 and "epoch 1" not in out
    assert "every class needs at least 2 training rows" in err and "World (0), Business (0), Sci/Tech (0)" in err
    assert snapshot(used_output) == before
    code, _, err = run_main("smoke=true", "max_train_samples=5", f"output_dir={used_output}")
    assert code == 2 and "among the 5 rows of max_train_samples" in err


@pytest.mark.slow
def test_fewer_batches_than_training_processes_are_refused_before_training(run_main, used_output):
    """Two ranks and one batch: each rank's share was no step, and the run ended as 'training diverged'."""
    before = snapshot(used_output)
    code, out, err = run_main("smoke=true", "processes=2", "batch_size=4096", f"output_dir={used_output}")
    assert code == 2 and "epoch 1" not in out and "diverged" not in err
    assert re.search(r"batch_size 4096 makes 1 batch\(es\) of the [\d,]+ training rows, fewer than the 2 "
                     r"processes that train: lower batch_size or processes", err), err
    assert snapshot(used_output) == before


@pytest.mark.parametrize("sample", [0, 20])
def test_validation_ids_are_the_rows_indices_in_the_training_source(kernel, tmp_path, sample):
    """Two runs' validation predictions pair by these ids; the digest changes with the slice."""
    from kernel_helpers import write_test_pickle, write_train_csv

    train = write_train_csv(tmp_path / "train.csv", rows_per_class=12)
    test = write_test_pickle(tmp_path / "test.pkl", rows=8)
    inputs = kernel.Inputs("unused", str(train), test, "other", "", tmp_path)
    cfg = kernel.config_from_overrides({"max_train_samples": sample, "val_fraction": 0.25, "seed": 3})
    data = kernel.load_data(cfg, inputs)
    source = kernel.read_ag_news_csv(train)
    assert len(data.val_ids) == len(data.val_rows) and len(set(data.val_ids.tolist())) == len(data.val_ids)
    for row, source_row in zip(data.val_rows, data.val_ids):  # the id names the same row of the source file
        assert data.texts[row] == kernel.clean_text(source["text"][source_row])
        assert data.labels[row] == source["label"][source_row]
    again = kernel.load_data(cfg, inputs)
    assert again.val_ids_sha256 == data.val_ids_sha256 and len(data.val_ids_sha256) == 64
    other = kernel.load_data(kernel.dataclasses.replace(cfg, seed=4), inputs)
    assert other.val_ids_sha256 != data.val_ids_sha256
