"""`lorakit report`: one self-contained HTML file (versions table, validation curves, confusion matrices, scores
over time), checked by parsing it and, where a headless browser is installed, by rendering it."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from lorakit_fixtures import error_line, ledger_write, one_document, push, push_pull

MESSAGE = '<script>document.title="pwned"</script><img src=x onerror="document.body.dataset.xss=1">'
BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "google-chrome-stable")


class Page(HTMLParser):
    """What a test reads of the report: table rows, charts, every src/href, script elements and cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.charts, self.links, self.scripts, self.cells, self.tables = [], [], [], 0, [], []
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
        elif tag == "table":
            self.tables.append(attrs.get("id"))

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
    assert out == "wrote submissions/report.html (6 charts; curves of v1, v3)\n"
    header, *rows = page.rows[:5]
    assert [r[0] for r in rows] == ["v4", "v3", "v2", "v1"]
    assert [r[1] for r in rows] == ["pushed", "pulled", "scored", "scored"]
    assert rows[1][2] == MESSAGE  # the message is text in its cell (whole: a page wraps it), not markup
    assert page.scripts == 0 and "<script>" not in path.read_text() and "&lt;script&gt;" in path.read_text()
    assert page.charts == [("val_accuracy", None), ("loss", None), ("loss_steps", None), ("confusion", "1"),
                           ("confusion", "3"), ("scores", None)]
    assert not [link for link in page.links if link.lower().startswith(("http:", "https:", "//"))]

    text = path.read_text()
    for version in (1, 3):  # each matrix's diagonal: the rows the run got right, from logits.npz
        with np.load(kit.repo / "submissions" / f"v{version}" / "logits.npz") as npz:
            right = int((npz["val_logits"].argmax(axis=1) == npz["val_labels"]).sum())
        figure = text.split(f'data-version="{version}"')[1].split("</svg>")[0]
        counts = [int(c) for c in re.findall(r'text-anchor="middle">(\d+)</text>', figure)]  # row by row
        assert sum(counts) == 2000 and sum(counts[k * 5] for k in range(4)) == right
    # each point a marker with its tooltip: two runs of two epochs; filled circles solid, hollow squares dashed
    assert chart(text, "val_accuracy").count("<circle") == 2 * 2 + 2  # and the legend's two
    loss = chart(text, "loss")
    assert loss.count("<circle") == 2 * 2 + 2 and loss.count('fill="#fff"') == 2 * 2 + 2  # train, val (legend too)
    assert "<title>v3 epoch 2: val_loss 0.3000</title>" in loss
    assert "<title>v1 epoch 1: val_accuracy 0.8800</title>" in chart(text, "val_accuracy")


def chart(text: str, name: str) -> str:
    """The SVG of the chart ``name`` in a report's text."""
    return text.split(f'data-chart="{name}"', 1)[1].split("</svg>", 1)[0]


def legend(svg: str) -> list:
    """(name, dashed, marker) of each legend entry of a chart: its marker a circle, a square or none."""
    entries = re.findall(r'<g class="legend">(.*?)</g>', svg)
    return [(re.search(r">([^<>]*)</text>", e).group(1), "stroke-dasharray" in e,
             "circle" if "<circle" in e else "square" if "<rect" in e else None) for e in entries]


def test_a_run_of_one_epoch_is_a_labelled_marker_with_a_legend_that_matches(kit):
    kit.epochs = 1
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8", "--set", "seed=7")
    text = report_of(kit)[0].read_text()
    accuracy, loss = chart(text, "val_accuracy"), chart(text, "loss")
    assert "<polyline" not in accuracy and "<polyline" not in loss  # one point each: no line to draw
    assert re.findall(r'class="point-label"[^>]*>([^<]*)<', accuracy) == ["v1, v2"]  # one spot, one label
    assert sorted(re.findall(r'class="point-label"[^>]*>([^<]*)<', loss)) == ["v1 train, v2 train", "v1 val, v2 val"]
    assert legend(loss) == [("v1 train", False, "circle"), ("v1 val", True, "square"), ("v2 train", False, "circle"),
                            ("v2 val", True, "square")]  # each entry as its series is drawn
    assert loss.count("<circle") == 2 + 2 and loss.count('fill="#fff"') == 2 + 2


def test_the_training_loss_per_step_is_drawn_from_loss_curve_read_as_untrusted(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    metrics = json.loads((kit.repo / "submissions" / "v1" / "metrics.json").read_text())
    text = report_of(kit)[0].read_text()
    steps = chart(text, "loss_steps")
    first = metrics["loss_curve"][0]
    assert f"<title>v1 step {first['step']} (epoch {first['epoch']:.2f}): loss {first['loss']:.4f}</title>" in steps
    assert steps.count("<polyline") == 2 and legend(steps) == [("v1", False, "circle"), ("v2", False, "circle")]

    odd = [{"step": "x", "epoch": 1, "loss": 0.5}, {"step": 1, "epoch": "nan", "loss": 0.5}, "not a point",
           {"step": 2, "epoch": 0.1, "loss": float("inf")}, {"step": 3, "epoch": -1, "loss": 0.2}]
    long = [{"step": 25 * k, "epoch": k / 100, "loss": 1 / (1 + k)} for k in range(1, 30_001)]
    path = kit.repo / "submissions" / "v2" / "metrics.json"
    path.write_text(json.dumps({**metrics, "loss_curve": odd + long}).replace("Infinity", "1e999"))
    (kit.repo / "submissions" / "v1" / "metrics.json").write_text(json.dumps({**metrics, "loss_curve": odd}))
    code, out, err = kit.run("report")
    assert code == 0 and "Traceback" not in err, err
    steps = chart((kit.repo / "submissions" / "report.html").read_text(), "loss_steps")
    assert legend(steps) == [("v2", False, None)]  # v1 had no good point; v2 too many for markers
    points = re.search(r'<polyline points="([^"]*)"', steps).group(1).split()
    assert 390 <= len(points) <= 401  # 19,995 good points read (at most 20,000), thinned to what the chart shows


def test_scores_over_time_label_each_point_by_version_on_a_readable_axis(three_versions):
    kit = three_versions
    rows = kit.rows()
    for row, when in zip(rows, ("2025-04-20T09:10:00Z", "2025-04-20T14:55:00Z")):
        row["submitted_at"] = when
    ledger_write(kit, rows)
    text = report_of(kit)[0].read_text()
    scores = chart(text, "scores")
    assert re.findall(r'class="tag"[^>]*>([^<]*)<', scores) == ["v1", "v2", "v1", "v2"]  # public, then private
    ticks = [re.findall(r"<tspan[^>]*>([^<]*)</tspan>", t) for t in
             re.findall(r'<text x="[\d.]+" y="[\d.]+" text-anchor="middle">(<tspan.*?)</text>', scores)]
    assert ticks == [["10:00", "Apr 20"], ["12:00"], ["14:00"]]  # a round step, the date once, no overlap


def test_the_report_shows_notes_seed_groups_the_config_diff_sweeps_and_the_kernel_pushed_to(kit):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    push_pull(kit, "--set", "lora_r=8", "--set", "seed=7")
    assert kit.run("note", 2, "the keeper")[0] == 0 and kit.run("tag", 2, "final")[0] == 0
    code, out, err = kit.run("sweep", "--grid", "lora_r=4,2", "--yes")
    assert code == 0, err
    kit.state.status_script, kit.state.failure_message = ["ERROR"], "CUDA out of memory"
    push(kit, "--set", "lr=0.01", message="too high")
    assert kit.run("status", 5)[0] == 3
    path, page, out, err = report_of(kit, "--versions", "1,2,3")
    text = path.read_text()
    assert re.search(r"<h1>alice/[\w-]+</h1>", text) and "<title>lorakit report: alice/" in text
    versions = {row[0]: row for row in page.rows[1:6]}
    assert versions["v2"][10] == "#final the keeper" and versions["v5"][11] == "failed: CUDA out of memory"
    assert "seed-groups" in page.tables and ["v2+v3", "42, 7", "lora_r=8 lr=0.0005"] == page.rows[7][:3]
    assert "config-diff" in page.tables
    diff = text.split('id="config-diff"')[1].split("</table>")[0]
    assert re.findall(r'<td class="wide">(\w+)</td>', diff) == ["lora_r", "seed"]  # the keys that differ only
    (sweep_id,) = [t for t in page.tables if t and t.startswith("sw-")]
    ranked = text.split(f'id="{sweep_id}"')[1].split("</table>")[0]
    assert re.findall(r'<td class="versions">(v\d+)</td>', ranked) == ["v4", "v1"]  # a2 pushed; a1 reused v1
    assert "<th>p (Holm)</th>" in ranked and re.search(r"p = [\d.]+, Holm [\d.]+</td>", ranked)


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
    assert document["versions"] == [1, 2, 3] and document["charts"] == 6 and "Traceback" not in err
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
    assert [row[0] for row in dom.rows[1:5]] == ["v4", "v3", "v2", "v1"] and dom.rows[2][2] == MESSAGE  # as text
    assert [name for name, _ in dom.charts] == ["val_accuracy", "loss", "loss_steps", "confusion", "confusion",
                                                "confusion", "scores"]
    assert "data-xss" not in proc.stdout.split("<body", 1)[1].split(">", 1)[0]  # the onerror never ran
    assert "<title>lorakit report" in proc.stdout and "pwned" not in proc.stdout.split("</title>")[0]
    shot = tmp_path / "report.png"  # the page as drawn: look at it when the charts change
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                           f"--screenshot={shot}", "--window-size=1400,3000", path.as_uri()], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stderr[-2000:]
    if os.environ.get("LORAKIT_REPORT_SHOT"):
        shutil.copy(shot, os.environ["LORAKIT_REPORT_SHOT"])
