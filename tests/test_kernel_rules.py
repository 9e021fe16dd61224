"""One implementation of each rule: lorakit and bench reach the kernel through one loader and a listed API,
and `lorakit check` enforces exactly the kernel's config rules."""
from __future__ import annotations

import re

import pytest

from conftest import KERNEL, ROOT
from test_kernel import BAD_VALUES

USERS = sorted([*ROOT.joinpath("src", "lorakit").glob("*.py"), *ROOT.joinpath("bench").glob("*.py")])
KERNEL_HANDLES = r"\b(?:kmod|vmod|K)\.([A-Za-z_]\w*)"  # how lorakit and bench name the loaded kernel


def test_public_api_resolves(kernel):
    missing = [name for name in kernel.PUBLIC_API if not hasattr(kernel, name)]
    assert not missing


def test_lorakit_and_bench_use_only_the_public_api(kernel):
    used, optional = {}, set()  # optional: hooks a variant copy of the kernel may add, behind hasattr()
    for path in USERS:
        text = path.read_text()
        used.update({name: path.name for name in re.findall(KERNEL_HANDLES, text)})
        optional.update(re.findall(r'hasattr\((?:kmod|vmod|K), "(\w+)"\)', text))
    assert used, "no kernel use found: has the naming convention changed?"
    assert {name: where for name, where in used.items() if name not in {*kernel.PUBLIC_API, *optional}} == {}


def test_the_loader_is_the_one_door(kernel):
    """Nothing else loads the kernel script by path: every user goes through kernel_module_load."""
    import sys

    assert kernel.__name__ == "agnews_lora" and sys.modules["agnews_lora"] is kernel
    assert sys.path[0] == str(KERNEL.parent)  # spawned processes import it by name from there
    for path in [*USERS, *ROOT.joinpath("tests").glob("*.py")]:
        text = path.read_text()
        loads_by_path = "spec_from_file_location" in text and "agnews_lora" in text
        assert not loads_by_path or path.name in ("project.py", "test_kernel_rules.py"), path


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_lorakit_check_refuses_what_the_kernel_refuses(key, value, message, capsys, monkeypatch):
    from lorakit.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["check", "--set", f"{key}={value}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lorakit: error: invalid config: ") and message in err and len(err.splitlines()) == 1
