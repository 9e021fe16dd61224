"""The docs say what the code does: generated pages are fresh, the README is short, true and linked."""
from __future__ import annotations

import re
import sys

import pytest

from kernel_helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "docs"))
import generate  # noqa: E402


def test_readme_is_short_and_opens_with_the_two_commands():
    assert len(README.encode()) <= 8000
    first_block = README.split("```")[1]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]


def test_the_readme_names_the_tested_image_versions():
    pins = [line.split("==") for line in (ROOT / "requirements-kaggle.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")]
    assert len(pins) >= 7
    flat = " ".join(README.split())
    for name, version in pins:
        assert f"{name} {version}" in flat, name


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))])
def test_every_relative_link_resolves(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in link]
    missing = [link for link in links if not ((ROOT / page).parent / link).exists()]
    assert not missing


def test_every_figure_in_the_results_table_was_measured():
    """Each number in the README's results table appears in bench/RESULTS.md or bench/ACCURACY.md."""
    table = README.split("## Results", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert len(rows) >= 5
    evidence = (ROOT / "bench" / "RESULTS.md").read_text() + (ROOT / "bench" / "ACCURACY.md").read_text()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2], row  # where it was measured, or why not
        for figure in re.findall(r"\d[\d,]*\.?\d*", cells[1]):
            assert figure.rstrip(".") in evidence, (figure, row)
        if "not yet measured" not in cells[1]:
            assert re.search(r"CPU|NVIDIA|exact count", cells[2]), row


@pytest.mark.slow
def test_generated_pages_are_fresh():
    """config.md and cli.md, the transcripts included (a stand-in session running the real kernel: ~45 s)."""
    stale = {path.name: first_difference(path.read_text(encoding="utf-8"), text)
             for path, text in generate.pages().items() if path.read_text(encoding="utf-8") != text}
    assert not stale, f"run python docs/generate.py ({stale})"


def first_difference(old: str, new: str) -> str:
    """The first line where the committed page and the generated one part, both ways: what to look at."""
    lines = zip(old.splitlines() + [""], new.splitlines() + [""])
    number, (was, now) = next((i, pair) for i, pair in enumerate(lines, 1) if pair[0] != pair[1])
    return f"line {number}: committed {was!r}, generated {now!r}"


def test_the_cli_reference_follows_the_parsers(monkeypatch):
    from lorakit import cli, console, retry

    page = generate.reference()
    for name, _help, flags, _handler in cli.commands():
        assert f"### `lorakit {name}`" in page
        for names, _options in flags:
            assert f"| `{', '.join(names)}" in page, (name, names)
    for var in retry.ENVIRONMENT:
        assert f"| `{var.name}` |" in page
    monkeypatch.setitem(console.REGISTRY, "frobnicate", ("frobnicate", "make it so", (console.flag(
        "--hard", action="store_true", help="harder"),), lambda args: 0))
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, ("frobnicate", "console")))
    page = generate.reference()
    assert "### `lorakit frobnicate`" in page and "| `--hard` | harder |" in page


def test_the_config_page_follows_the_code(kernel, monkeypatch):
    page = generate.config_page()
    for name in kernel.CONFIG_KEYS:
        assert f"| `{name}` |" in page
    assert "| `lr` | float | `0.0005` | [1e-06, 1], finite |" in page
    lr = kernel.dataclasses.replace(kernel.KNOBS["lr"], low=0, low_open=True, high=0.1)
    monkeypatch.setitem(kernel.KNOBS, "lr", lr)  # a changed rule changes the page
    assert "| `lr` | float | `0.0005` | (0, 0.1], finite |" in generate.config_page()
