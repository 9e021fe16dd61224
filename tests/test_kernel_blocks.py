"""The two blocks `lorakit push` writes into the build copy (lorakit.kernel renders them with the kernel's own
patterns): the overrides, which the kernel applies before --config and --set; and the push record beside its token
(message, git commit and dirty flag, push time, accelerator asked), which the kernel reads from its own constant
at run time, as data, and copies into metrics.json as `push`, without changing config_hash."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from kernel_helpers import KERNEL, ROOT, kernel_env
from lorakit.kernel import render_overrides

MESSAGES = [
    'r=4: "quoted", \'\'\' and """ and a \\ back\\slash, ünïcödé ✓ \U0001F600\nsecond line\r\n\ttabbed',
    '"""', "'''", "\\", '\\"""', 'ends with a quote"', "ends with a backslash\\", "\x00\x1b[31m\u2028\u2029",
    '"""\nimport os; os.system("touch pwned")\n"""',
    '\n"""\n# <<< lorakit push record <<<\nPUSH_RECORD_JSON = r"""\n{}',
    "# >>> lorakit overrides >>>\nOVERRIDES_JSON = r\"\"\"\n{\"lora_r\": 64}\n\"\"\"\n# <<< lorakit overrides <<<",
]


def record_of(message: str, config_hash: str) -> dict:
    return {"push_token": "lk-0123456789ab", "pushed_at": "2026-12-01T12:00:00Z", "message": message,
            "git_commit": "0" * 40, "git_dirty": None, "accelerator": "NvidiaTeslaT4", "config_hash": config_hash,
            "trainable_params": 123456}


def test_override_order_block_file_set(kernel, tmp_path, monkeypatch):
    rendered = render_overrides(kernel, KERNEL.read_text(), {"epochs": 7, "lr": 1e-3, "seed": 5})
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"lr": 2e-3, "seed": 6}))
    block = re.search(r'OVERRIDES_JSON = r"""\n(.*?)\n"""', rendered, re.S).group(1)
    monkeypatch.setattr(kernel, "OVERRIDES_JSON", block)  # what the running build copy holds
    cfg = kernel.resolve_config(str(config_file), ["seed=9"])
    assert (cfg.epochs, cfg.lr, cfg.seed) == (7, 2e-3, 9)


def test_overrides_block_roundtrip(kernel):
    text = KERNEL.read_text()
    assert kernel.read_overrides_block(text) == {}
    rendered = render_overrides(kernel, text, {"lora_r": 4, "smoke": True})
    assert kernel.read_overrides_block(rendered) == {"lora_r": 4, "smoke": True}
    compile(rendered, "rendered.py", "exec")
    # only the block changed: everything around it is byte-identical
    head, tail = text.split('OVERRIDES_JSON = r"""\n{}\n"""')
    assert rendered.startswith(head) and rendered.endswith(tail)
    assert kernel.read_overrides_block(render_overrides(kernel, rendered, {})) == {}
    with pytest.raises(kernel.ConfigError, match="unknown config key"):
        render_overrides(kernel, text, {"nope": 1})
    with pytest.raises(kernel.ConfigError, match="markers are missing"):
        kernel.read_overrides_block(text.replace(kernel.OVERRIDES_END, ""))


@pytest.fixture
def project(monkeypatch):
    from lorakit.project import project_load

    monkeypatch.chdir(ROOT)
    return project_load()


@pytest.mark.parametrize("message", MESSAGES)
def test_any_message_round_trips_and_cannot_break_the_script(kernel, project, tmp_path, message):
    from lorakit.kernel import config_effective, kernel_module_load, pushed_source_read, script_render

    effective = config_effective(project, ["lora_r=4"])
    record = record_of(message, effective.config_hash)
    rendered = script_render(project, effective, record["push_token"], record)  # compiles, or refuses
    copy = tmp_path / "agnews_lora.py"
    copy.write_text(rendered, encoding="utf-8")
    module = kernel_module_load(copy, name="agnews_lora_pushed_copy")  # what Python itself reads
    try:
        assert module.push_record() == record
        assert module.OVERRIDES_JSON.strip() == json.dumps({"lora_r": 4}, indent=2)
    finally:
        sys.modules.pop("agnews_lora_pushed_copy", None)
    assert kernel.read_push_record(rendered) == record == pushed_source_read(project, rendered).record
    assert kernel.read_overrides_block(rendered) == {"lora_r": 4}
    assert kernel.config_hash(kernel.config_from_overrides(kernel.read_overrides_block(rendered))) \
        == effective.config_hash
    assert rendered.isascii()  # every message, unicode too, is written as ASCII JSON escapes
    assert not (tmp_path / "pwned").exists()


def test_a_local_copy_has_an_empty_record(kernel):
    assert kernel.PUSH_RECORD_JSON.strip() == "{}" and kernel.push_record() == {}
    assert kernel.read_push_record("print('a script without the block')\n") == {}


@pytest.mark.parametrize("block", ["not json", "[1, 2]", '{"message": {"nested": 1}}', '__import__("os")', ""])
def test_a_damaged_record_is_ignored_with_a_warning_at_run_time(kernel, monkeypatch, capsys, block):
    monkeypatch.setattr(kernel, "PUSH_RECORD_JSON", block)
    assert kernel.push_record() == {}
    err = capsys.readouterr().err
    assert err.startswith("warning: the push record") and "metrics.json records no push" in err
    with pytest.raises(kernel.KernelError, match="the push record"):
        kernel.read_push_record(f'# >>> lorakit push record >>>\nPUSH_RECORD_JSON = r"""\n{block}\n"""\n'
                                "# <<< lorakit push record <<<\n")


@pytest.mark.parametrize("record, why", [({"a": float("nan")}, "cannot be written as JSON"),
                                         ({"a": [1]}, "is not a string, number, boolean or null"),
                                         ({1: "a"}, "keys must be strings")])
def test_a_record_json_cannot_hold_is_refused_before_pushing(kernel, project, record, why):
    from lorakit.errors import UsageError
    from lorakit.kernel import config_effective, script_render

    with pytest.raises(UsageError, match=why):
        script_render(project, config_effective(project), "lk-0123456789ab", record)


@pytest.mark.slow
def test_a_pushed_copy_copies_its_record_into_metrics_json(project, tmp_path):
    """The whole path: a rendered copy, run as Kaggle runs it (from another folder than lorakit's), writes its
    record into metrics.json; the config_hash is the one lorakit pushed."""
    from lorakit.kernel import config_effective, script_render

    effective = config_effective(project, ["smoke=true", "epochs=1"])
    record = record_of(MESSAGES[0], effective.config_hash)
    script = tmp_path / "run" / "__notebook__.py"
    script.parent.mkdir()
    script.write_text(script_render(project, effective, record["push_token"], record), encoding="utf-8")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, str(script), "--set", f"output_dir={tmp_path / 'out'}"],
                          cwd=tmp_path / "tmp", env=kernel_env(tmp_path / "tmp"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["push"] == record and metrics["config_hash"] == effective.config_hash
    assert "warning: the push record" not in proc.stderr
