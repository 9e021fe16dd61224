"""The checkout lorakit works in: kernel-metadata.json, kernel references and slugs, git state, outside a repo."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from lorakit.errors import UsageError
from lorakit.project import KernelRef, git_state, slugify_title
from lorakit.common import version_parse

from kernel_helpers import KERNEL, ROOT


def test_kernel_metadata_is_pushable(kernel):
    meta = json.loads((ROOT / "kernel-metadata.json").read_text())
    owner, slug = meta["id"].split("/")
    assert owner and re.fullmatch(r"[a-z0-9-]{5,}", slug)
    assert len(meta["title"]) >= 5
    slugified = re.sub(r"[^a-z0-9]+", "-", meta["title"].lower()).strip("-")
    assert slugified == slug  # else the client warns that the title does not resolve to the id
    assert (ROOT / meta["code_file"]).resolve() == KERNEL
    assert meta["language"] == "python" and meta["kernel_type"] == "script"
    for key in ("is_private", "enable_gpu", "enable_internet"):
        assert meta[key] is True
    assert meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["competition_sources"] == [kernel.COMPETITION]
    assert all(re.fullmatch(r"[\w-]+/[\w-]+", s) for s in meta["dataset_sources"])
    compile(KERNEL.read_text(), str(KERNEL), "exec")


def test_kernel_ref():
    ref = KernelRef.parse("alice/agnews-lora")
    assert (ref.owner, ref.slug, str(ref), ref.is_placeholder) == ("alice", "agnews-lora", "alice/agnews-lora", False)
    assert KernelRef.parse("your-kaggle-username/agnews-lora").is_placeholder
    assert KernelRef.parse("YOUR_USERNAME/agnews-lora").with_owner("bob") == KernelRef("bob", "agnews-lora")
    for bad in ("agnews-lora", "a/b/c", "/agnews-lora", "alice/abc", "alice/bad slug"):
        with pytest.raises(UsageError):
            KernelRef.parse(bad)
    with pytest.raises(Exception):
        ref.owner = "mallory"  # frozen


def test_slugify_and_versions():
    assert slugify_title("AG News LoRA under 1M") == "ag-news-lora-under-1m"
    assert version_parse("v12") == 12 and version_parse(3) == 3
    for bad in ("0", "-1", "latest", None):
        with pytest.raises(UsageError):
            version_parse(bad)


def test_git_state(tmp_path):
    assert git_state(tmp_path) == ("", None) or git_state(tmp_path)[0] == ""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, env=env, capture_output=True, check=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    run("add", "a.txt")
    run("commit", "-qm", "one")
    sha, dirty = git_state(tmp_path)
    assert len(sha) == 40 and dirty is False
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "ledger.csv").write_text("version\n")
    run("add", "submissions/ledger.csv")
    run("commit", "-qm", "ledger")
    (tmp_path / "submissions" / "ledger.csv").write_text("version\n1\n")
    assert git_state(tmp_path)[1] is False  # the ledger changing does not make the code dirty
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path)[1] is True


def test_outside_a_repo(tmp_path, monkeypatch, capsys):
    from lorakit.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 7
    assert "no kernel-metadata.json found" in capsys.readouterr().err
