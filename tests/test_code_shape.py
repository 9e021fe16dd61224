"""The kernel's shape, as the developers' guide asks: it reads top-down (run() near the top) and no function is
over 60 lines or 6 parameters (self/cls aside; dataclass constructors are generated, so never counted)."""
from __future__ import annotations

import ast

from conftest import KERNEL

MAX_LINES = 60
MAX_PARAMS = 6
RUN_WITHIN = 300  # lines from the top of the file


def functions(path) -> list[tuple[str, int, int, int]]:
    """(name, first line, lines, parameters) of every function and method in `path`."""
    rows = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg) if a]
            params = len([n for n in names if n not in ("self", "cls")])
            rows.append((node.name, node.lineno, node.end_lineno - node.lineno + 1, params))
    return rows


def test_no_kernel_function_is_too_long_or_takes_too_many_parameters():
    rows = functions(KERNEL)
    assert len(rows) > 100  # the parser saw the kernel
    assert [(name, line, length) for name, line, length, _ in rows if length > MAX_LINES] == []
    assert [(name, line, params) for name, line, _, params in rows if params > MAX_PARAMS] == []


def test_run_is_near_the_top_of_the_kernel():
    starts = [line for name, line, _, _ in functions(KERNEL) if name == "run"]
    assert starts and starts[0] <= RUN_WITHIN, starts
