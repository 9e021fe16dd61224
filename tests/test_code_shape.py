"""The developers' guide's shape rules, computed with ast: no function over 60 lines or over 6 parameters
(``self``/``cls`` not counted; ``*args`` and ``**kwargs`` count one each; dataclass constructors are generated,
so they never show up here), and the kernel reads top-down (run() near the top)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kernel_helpers import KERNEL, ROOT

MAX_LINES = 60
MAX_PARAMETERS = 6
RUN_WITHIN = 300  # lines from the top of the kernel: a reader sees the whole job first


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (args.vararg is not None) + (args.kwarg is not None)


def oversized(path: Path) -> list[str]:
    """Each function of ``path`` over the limits, as 'file:line name (N lines, M parameters)'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines, params = node.end_lineno - node.lineno + 1, parameter_count(node)
            if lines > MAX_LINES or params > MAX_PARAMETERS:
                found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines, {params} parameters)")
    return found


def test_the_rule_counts_what_it_should(tmp_path):
    sample = tmp_path / "sample.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    sample.write_text(f"class A:\n    def fits(self, a, b, c, d, e, f):\n        pass\n\n"
                      f"def too_many(a, b, c, d, e, *rest, **named):\n    pass\n\n"
                      f"def too_long():\n{body}\n")
    assert oversized(sample) == ["sample.py:5 too_many (2 lines, 7 parameters)",
                                 "sample.py:8 too_long (61 lines, 0 parameters)"]


@pytest.mark.parametrize("files", [
    pytest.param(sorted(ROOT.joinpath("src", "lorakit").glob("*.py")), id="lorakit"),
    pytest.param([KERNEL], id="kernel"),
])
def test_no_function_over_60_lines_or_6_parameters(files):
    assert [entry for path in files for entry in oversized(path)] == []


def test_run_is_near_the_top_of_the_kernel():
    tree = ast.parse(KERNEL.read_text(encoding="utf-8"))
    starts = [node.lineno for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "run"]
    assert starts and starts[0] <= RUN_WITHIN, starts


# ------------------------------------------------------------------------------------------------ the kernel's order
TRAIN_STEP_WITHIN = 3  # calls from run() to train_step: the training step is a few jumps from the whole job
READER_LINES = 175  # the test-file reader section, its heading to the next one (473 lines before issue 24)
LEARNING = ("data: cleaning and the validation split", "model: encoder, LoRA, head and the exact budget", "batching",
            "training", "training on every GPU (data parallel)", "prediction and calibration", "outputs")
APPENDIX = ("errors", "config rules", "input discovery", "the checks before training",
            "publishing the outputs, and keeping the adapter", "smoke mode", "stop signal", "test file reader",
            "for lorakit", "main")


def kernel_calls() -> dict:
    """{function: the kernel's module-level functions and classes it calls by name}, methods under their class."""
    tree = ast.parse(KERNEL.read_text(encoding="utf-8"))
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    return {name: {call.func.id for call in ast.walk(node) if isinstance(call, ast.Call)
                   and isinstance(call.func, ast.Name) and call.func.id in defined} for name, node in defined.items()}


def calls_from(graph: dict, start: str, target: str) -> int | None:
    """The fewest calls from `start` to `target` (breadth first), None when it is never reached."""
    seen, frontier, depth = {start}, {start}, 0
    while frontier:
        if target in frontier:
            return depth
        frontier = {callee for name in frontier for callee in graph[name]} - seen
        seen |= frontier
        depth += 1
    return None


def section_lines() -> dict:
    """{section heading: (its line, the line of the next heading)} of the kernel's `# ---- name` headings."""
    lines = KERNEL.read_text(encoding="utf-8").splitlines()
    heads = [(i, line.lstrip("# -")) for i, line in enumerate(lines, 1) if line.startswith("# ----")]
    return {name: (start, end) for (start, name), (end, _) in zip(heads, [*heads[1:], (len(lines) + 1, "")])}


def test_the_training_step_is_within_three_calls_of_run():
    assert calls_from(kernel_calls(), "run", "train_step") <= TRAIN_STEP_WITHIN
    assert calls_from({"a": {"b"}, "b": {"c"}, "c": set()}, "a", "c") == 2  # the counting itself


def test_the_learning_comes_first_and_the_appendix_after():
    sections = section_lines()
    appendix = next(i for i, line in enumerate(KERNEL.read_text(encoding="utf-8").splitlines(), 1)
                    if line.startswith("# Appendix: the guards and the plumbing"))
    assert list(sections) == ["config", "the job", *LEARNING, *APPENDIX]  # in this order, no other
    assert all(sections[name][0] < appendix for name in LEARNING)
    assert all(sections[name][0] > appendix for name in APPENDIX)


def test_the_test_file_reader_stays_small():
    start, end = section_lines()["test file reader"]
    assert end - start <= READER_LINES, end - start


# ----------------------------------------------------------------------------------------------- lorakit's house
LORAKIT = ROOT / "src" / "lorakit"
MAX_MODULE_LINES = 700


def lorakit_imports() -> dict:
    """{module: the lorakit modules it imports}, function-level imports included."""
    graph = {}
    for path in sorted(LORAKIT.glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lorakit."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "lorakit":
                found.update(alias.name for alias in node.names if (LORAKIT / f"{alias.name}.py").exists())
        graph[path.stem] = found - {path.stem}
    return graph


def test_no_lorakit_module_is_over_700_lines():
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in LORAKIT.glob("*.py")}
    assert {name: size for name, size in sizes.items() if size > MAX_MODULE_LINES} == {}


def test_lorakit_imports_form_layers_without_cycles():
    graph = lorakit_imports()
    done: set = set()
    while len(done) < len(graph):  # peel off the modules whose imports are all placed: a cycle leaves some
        ready = sorted(m for m in graph if m not in done and graph[m] <= done)
        assert ready, f"an import cycle among {sorted(set(graph) - done)}"
        done.update(ready)


# What every command may use; a command module (one that cli.COMMANDS names) or a part of one (arms: the sweep's
# definition) may also use another command's steps (run uses push, pull and submit), a shared module never does.
SHARED = ("common", "console", "inflight", "errors", "ledger", "project", "kernel", "remote", "remote_datasets",
          "remote_competitions", "transport", "retry", "timeouts", "credentials", "stats", "runs", "processes", "__init__")


def test_shared_modules_never_import_a_command_module():
    from lorakit import cli

    commands = {module for _name, module in cli.COMMANDS}
    graph = lorakit_imports()
    assert {m: sorted(graph[m] & commands) for m in SHARED if graph[m] & commands} == {}
    assert set(SHARED) <= set(graph)
