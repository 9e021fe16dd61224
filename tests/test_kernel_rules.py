"""One implementation of each rule: lorakit, bench and docs reach the kernel through one loader and a listed API, the
loader names what is missing, the kernel script imports nothing local and lorakit's wheel ships it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

from kernel_helpers import KERNEL, ROOT
from lorakit_fixtures import REPO


LORAKIT = sorted(ROOT.joinpath("src", "lorakit").glob("*.py"))
BENCH = sorted([*ROOT.joinpath("bench").glob("*.py"), *ROOT.joinpath("docs").glob("*.py")])
USERS = [*LORAKIT, *BENCH]
# How lorakit/kernel.py, bench/ and docs/generate.py name the loaded kernel (lorakit's other modules never see it).
KERNEL_HANDLES = r"(?:\b_?(?:kmod|vmod|K)|_kernel_of\(\w*\))\.([A-Za-z_]\w*)"
DOOR = ROOT / "src" / "lorakit" / "kernel.py"


def kernel_names_used(paths: list) -> tuple[dict, set]:
    """{name: file} of every kernel attribute the files reach, and the optional hooks they test with hasattr()."""
    used, optional = {}, set()  # optional: hooks a variant copy of the kernel may add, behind hasattr()
    for path in paths:
        text = path.read_text()
        used.update({name: path.name for name in re.findall(KERNEL_HANDLES, text)})
        optional.update(re.findall(r'hasattr\(_?(?:kmod|vmod|K), "(\w+)"\)', text))
    return used, optional


def test_public_api_resolves(kernel):
    missing = [name for name in (*kernel.PUBLIC_API, *kernel.BENCH_API) if not hasattr(kernel, name)]
    assert not missing


def test_public_api_is_what_lorakit_uses_and_bench_api_what_bench_adds(kernel):
    lorakit, _ = kernel_names_used(LORAKIT)
    bench, optional = kernel_names_used(BENCH)
    assert lorakit and bench, "no kernel use found: has the naming convention changed?"
    assert set(lorakit) == set(kernel.PUBLIC_API)  # each listed name used, each used name listed
    listed = {*kernel.PUBLIC_API, *kernel.BENCH_API, *optional}
    assert {name: where for name, where in bench.items() if name not in listed} == {}
    assert set(kernel.BENCH_API) <= set(bench) and not set(kernel.BENCH_API) & set(kernel.PUBLIC_API)


def test_the_loader_is_the_one_door(kernel):
    """Nothing else loads the kernel script by path: every user goes through kernel_module_load."""
    import sys

    assert kernel.__name__ == "agnews_lora" and sys.modules["agnews_lora"] is kernel
    assert sys.path[0] == str(KERNEL.parent)  # spawned processes import it by name from there
    for path in [*USERS, *ROOT.joinpath("tests").glob("*.py")]:
        text = path.read_text()
        loads_by_path = "spec_from_file_location" in text and "agnews_lora" in text
        assert not loads_by_path or path in (DOOR, ROOT / "tests" / "test_kernel_rules.py"), path
        assert not re.search(r"^def kernel_module_load", text, re.M) or path == DOOR, path  # one loader


def test_only_lorakit_kernel_sees_the_kernel_module():
    """lorakit's other modules reach the kernel through lorakit.kernel's typed functions, never its module."""
    sees = re.compile(r"\b_?(?:kmod|vmod)\b|\bK\.[A-Za-z_]|kernel_module_load|_kernel_of|\bagnews_lora\b")
    assert sees.search(DOOR.read_text())
    offenders = {path.name: sees.findall(path.read_text()) for path in ROOT.joinpath("src", "lorakit").glob("*.py")
                 if path != DOOR and sees.search(path.read_text())}
    assert offenders == {}


def test_a_rendered_script_reads_back_its_overrides_and_config(kernel, monkeypatch):
    """What lorakit renders into the build copy is what the kernel reads back: the same overrides, the same
    config (script_render reuses the validated config instead of checking this on every push)."""
    from lorakit.kernel import config_effective, script_render
    from lorakit.project import project_load

    monkeypatch.chdir(ROOT)
    project = project_load()
    effective = config_effective(project, ["lora_r=4", "lora_targets=query,value", "head=roberta"],
                                 {"adapter_from": "/kaggle/input/x-v1-adapter", "adapter_sha256": "0" * 64})
    rendered = script_render(project, effective, "lk-0123456789ab")
    block = kernel.read_overrides_block(rendered)
    assert block == json.loads(json.dumps(effective.overrides))
    assert kernel.config_hash(kernel.config_from_overrides(block)) == effective.config_hash
    assert rendered.endswith("\n# lorakit push token: lk-0123456789ab\n")
    compile(rendered, "agnews_lora.py", "exec")


def test_a_missing_kernel_dependency_names_the_extra(tmp_path, monkeypatch):
    from lorakit.errors import UsageError
    from lorakit.kernel import kernel_module_load

    copy = tmp_path / "agnews_lora.py"
    copy.write_text(KERNEL.read_text())
    monkeypatch.setitem(sys.modules, "numpy", None)  # as if numpy were not installed
    with pytest.raises(UsageError, match=r"agnews_lora.py needs numpy, one of the kernel's dependencies: "
                                         r"pip install -e '\.\[kernel\]'"):
        kernel_module_load(copy, name="agnews_lora_without_numpy")


def test_a_missing_kernel_package_names_the_checkouts_extra(tmp_path, monkeypatch):
    from lorakit.errors import UsageError
    from lorakit.kernel import kernel_module_load

    script = tmp_path / "needs_a_package.py"
    script.write_text("import lorakit_no_such_package_xyz\n")
    monkeypatch.chdir(REPO)
    with pytest.raises(UsageError) as caught:
        kernel_module_load(script, name="needs_a_package")
    assert str(caught.value).endswith("needs lorakit_no_such_package_xyz, one of the kernel's dependencies: "
                                      "pip install -e '.[kernel]'")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        kernel_module_load(script, name="needs_a_package")
    assert str(caught.value).endswith(f"pip install -e '{REPO}[kernel]'") and "lorakit[kernel]" not in str(caught.value)


def test_outside_a_checkout_the_kernel_packages_are_named(tmp_path):
    import shutil

    shutil.copytree(REPO / "src" / "lorakit", tmp_path / "site" / "lorakit")  # lorakit without its checkout
    code = "from lorakit.kernel import kernel_install_hint; print(kernel_install_hint('torch'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                          capture_output=True, text=True, timeout=120)
    hint = proc.stdout.strip()
    assert proc.returncode == 0 and hint.startswith("pip install 'torch"), proc.stderr
    assert "lorakit" not in hint and "-e" not in hint


def test_the_wheel_ships_the_kernel_script(tmp_path):
    """An installed lorakit (no checkout) finds the kernel's rules in its package data."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("lorakit-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("lorakit/kernel_script/agnews_lora.py") == KERNEL.read_bytes()


def test_kernel_imports_nothing_local():
    """Only the script is uploaded: it may import the standard library and the Kaggle image's packages."""
    import sys

    source = KERNEL.read_text()
    roots = {name.split(".")[0] for name in re.findall(r"^\s*(?:from|import) ([\w.]+)", source, re.M)}
    third_party = {"numpy", "pandas", "torch", "transformers", "peft", "datasets", "tqdm", "tokenizers", "matplotlib",
                   "pyarrow"}
    assert roots - set(sys.stdlib_module_names) - {"__future__"} <= third_party


def test_lorakit_reads_the_class_names_from_the_kernel(kernel, tmp_path):
    from lorakit.common import LABELS
    from lorakit.errors import UsageError
    from lorakit.kernel import kernel_labels

    assert LABELS == kernel.LABELS  # one definition: the kernel's line, read as a literal
    odd = tmp_path / "agnews_lora.py"
    odd.write_text("LABELS = (__import__('os').system('touch pwned'),)\n")
    with pytest.raises(UsageError, match="does not define LABELS"):
        kernel_labels(odd)  # read, never run
    assert not (tmp_path / "pwned").exists()
