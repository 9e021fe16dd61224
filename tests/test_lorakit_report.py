"""`lorakit report`: one self-contained HTML file (versions table, validation curves, confusion matrices, scores
over time), checked by parsing it and, where a headless browser is installed, by rendering it."""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from lorakit_fixtures import error_line, one_document, push, push_pull

MESSAGE = '<script>document.title="pwned"</script><img src=x onerror="document.body.dataset.xss=1">'
BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "google-chrome-stable")


class Page(HTMLParser):
    """What a test reads of the report: table rows, charts, every src/href, script elements and cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.charts, self.links, self.scripts, self.cells = [], [], [], 0, []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [value for name, value in attrs.items() if name in ("src", "href")]
        if tag == "script":
            self.scripts += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag == "svg":
            self.charts.append((attrs.get("data-chart"), attrs.get("data-version")))
        elif tag == "td":
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.rows[-1].append(self._cell)
            self._cell = None


def report_of(kit, *extra) -> tuple:
    code, out, err = kit.run("report", *extra)
    assert code == 0, err
    path = kit.repo / "submissions" / "report.html"
    return path, Page(path.read_text(encoding="utf-8")), out, err


@pytest.fixture
def three_versions(kit):
    """v1 and v2 pulled and scored, v3 pulled with a hostile message, v4 pushed only."""
    kit.state.score_hook = lambda content: ("0.85000", "0.84000")
    push_pull(kit, "--set", "lora_r=4")
    assert kit.run("submit", 1, "--wait")[0] == 0
    push_pull(kit, "--set", "lora_r=8")
    kit.state.score_hook = lambda content: ("0.86000", "0.85500")
    assert kit.run("submit", 2, "--wait")[0] == 0
    push(kit, "--set", "lora_r=2", message=MESSAGE)
    assert kit.run("status", 3, "--wait")[0] == 0 and kit.run("pull", 3)[0] == 0
    push(kit, "--set", "seed=7", message="queued")
    return kit


def test_report_holds_the_table_curves_confusion_matrices_and_scores(three_versions):
    kit = three_versions
    path, page, out, err = report_of(kit, "--versions", "1,3")
    assert out == "wrote submissions/report.html (5 charts; curves of v1, v3)\n"
    header, *rows = page.rows
    assert [r[0] for r in rows] == ["v4", "v3", "v2", "v1"]
    assert [r[1] for r in rows] == ["pushed", "pulled", "scored", "scored"]
    assert rows[1][2] == MESSAGE  # the message is text in its cell, not markup
    assert page.scripts == 0 and "<script>" not in path.read_text() and "&lt;script&gt;" in path.read_text()
    assert page.charts == [("val_accuracy", None), ("loss", None), ("confusion", "1"), ("confusion", "3"),
                           ("scores", None)]
    assert not [link for link in page.links if link.lower().startswith(("http:", "https:", "//"))]

    text = path.read_text()
    for version in (1, 3):  # each matrix's diagonal: the rows the run got right, from logits.npz
        with np.load(kit.repo / "submissions" / f"v{version}" / "logits.npz") as npz:
            right = int((npz["val_logits"].argmax(axis=1) == npz["val_labels"]).sum())
        figure = text.split(f'data-version="{version}"')[1].split("</svg>")[0]
        counts = [int(c) for c in re.findall(r'text-anchor="middle">(\d+)</text>', figure)]  # row by row
        assert sum(counts) == 2000 and sum(counts[k * 5] for k in range(4)) == right
    assert text.count("<circle") == 2 * 2 + 4 * 2 + 2 * 2  # accuracy, train and val loss of two runs; 2 scores x2


def test_report_defaults_to_the_pulled_versions_and_opens(three_versions, monkeypatch):
    import webbrowser

    kit = three_versions
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)  # the stdlib's, not ours
    code, out, err = kit.run("report", "--open", "--out", "elsewhere/r.html")
    path = kit.repo / "elsewhere" / "r.html"
    assert code == 0 and "elsewhere/r.html" in out and opened == [path.resolve().as_uri()]
    assert not (kit.repo / "submissions" / "report.html").exists()
    assert [v for name, v in Page(path.read_text()).charts if name == "confusion"] == ["1", "2", "3"]


def test_a_folder_without_predictions_is_noted_not_fatal(three_versions):
    kit = three_versions
    (kit.repo / "submissions" / "v2" / "logits.npz").unlink()
    (kit.repo / "submissions" / "v3" / "metrics.json").unlink()
    path, page, out, err = report_of(kit, "--json")
    document = one_document(out)
    assert document["versions"] == [1, 2, 3] and document["charts"] == 5 and "Traceback" not in err
    assert any("v2 not comparable" in n and "logits.npz is missing" in n for n in document["notes"])
    assert any("v3 not comparable" in n and "metrics.json is missing" in n for n in document["notes"])
    assert [v for name, v in page.charts if name == "confusion"] == ["1", "3"]
    assert "v2 not comparable" in path.read_text() and "lorakit: note: v3 not comparable" in err


def test_bad_versions_and_an_unwritable_out_are_refused_before_any_work(three_versions):
    kit = three_versions
    code, out, err = kit.run("report", "--versions", "2,9")
    assert code == 7 and "v9 is not in the ledger" in error_line(err) and "v1, v2, v3, v4" in err
    code, out, err = kit.run("report", "--versions", "4")
    assert code == 7 and "run `lorakit pull 4`" in error_line(err)
    code, out, err = kit.run("report", "--versions", "two")
    assert code == 2 and "positive kernel version number" in error_line(err)
    assert not (kit.repo / "submissions" / "report.html").exists()

    kit.ledger.write_text(kit.ledger.read_text() + "1,broken\n")  # the ledger is never read: --out fails first
    code, out, err = kit.run("report", "--out", "submissions/ledger.csv/report.html")
    assert code == 2 and "--out submissions/ledger.csv/report.html" in error_line(err) and "not a folder" in err
    code, out, err = kit.run("report", "--out", "submissions")
    assert code == 2 and "is a folder" in error_line(err)
    code, out, err = kit.run("report")
    assert code == 1 and "corrupted" in error_line(err) and not (kit.repo / "submissions" / "report.html").exists()


def test_an_existing_report_is_replaced_whole(kit):
    code, out, err = kit.run("report")  # an empty ledger still makes a (short) report
    assert code == 0, err
    path = kit.repo / "submissions" / "report.html"
    assert "No versions in the ledger yet" in path.read_text()
    push_pull(kit)
    assert kit.run("report")[0] == 0
    assert "No versions" not in path.read_text() and len(Page(path.read_text()).rows) == 2
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".report")] == []  # no temporary left


def test_a_report_that_cannot_be_written_leaves_the_last_one_whole(kit, monkeypatch):
    push_pull(kit)
    assert kit.run("report")[0] == 0
    path = kit.repo / "submissions" / "report.html"
    before = path.read_bytes()
    push_pull(kit, "--set", "lora_r=4")

    def disk_full(*args):  # the disk fills up as the new report is renamed into place
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lorakit.ledger.os.replace", disk_full)
    code, out, err = kit.run("report")
    assert code == 1 and error_line(err).endswith(f"--out {path}: cannot write it (No space left on device)")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".report")] == []


def browser_found():
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


def test_report_renders_in_a_headless_browser(three_versions, tmp_path):
    browser = browser_found()
    if browser is None:
        pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)})")
    path, _page, _out, _err = report_of(three_versions)
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Page(proc.stdout)
    assert len(dom.rows) == 5 and dom.rows[2][2] == MESSAGE  # the header and four versions, the message as text
    assert [name for name, _ in dom.charts] == ["val_accuracy", "loss", "confusion", "confusion", "confusion",
                                                "scores"]
    assert "data-xss" not in proc.stdout.split("<body", 1)[1].split(">", 1)[0]  # the onerror never ran
    assert "<title>lorakit report" in proc.stdout and "pwned" not in proc.stdout.split("</title>")[0]
