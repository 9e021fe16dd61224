"""The kernel script as a library: effective config, exact count and submission checks.

There is one implementation of the config rules, the count, the hash and the CSV checks: the kernel's
own (``kernel/agnews_lora.py``), loaded as a module. This file only adapts its errors to lorakit's.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from lorakit.errors import UsageError
from lorakit.project import Project, kernel_module_load


@contextlib.contextmanager
def kernel_errors(kmod, prefix: str = ""):
    """Turn the kernel's KernelError (and its subclasses) into a one-line UsageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    except kmod.KernelError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(prefix + first) from None


@dataclass(frozen=True)
class Effective:
    """The effective config of a push: the script's block, then the --set overrides."""

    kmod: object
    config: object  # kernel Config
    overrides: dict  # what the build copy's overrides block will hold
    breakdown: dict
    config_hash: str

    @property
    def trainable_params(self) -> int:
        return int(self.breakdown["total"])

    @property
    def budget(self) -> int:
        return int(self.config.param_budget)

    @property
    def within_budget(self) -> bool:
        return self.trainable_params <= self.budget

    def breakdown_text(self) -> str:
        return self.kmod.format_breakdown(self.breakdown, self.budget)


# The script lorakit ships (a link to kernel/agnews_lora.py in a checkout, a copy in an installed wheel).
PACKAGED_KERNEL = Path(__file__).with_name("kernel_script") / "agnews_lora.py"


def kernel_load(project: Optional[Project]):
    """The project's kernel script (its code_file), or the copy lorakit ships when there is no repository."""
    return kernel_module_load(project.script_path if project is not None else PACKAGED_KERNEL)


def config_effective(project: Project, sets: Iterable[str] = (), extra: Optional[dict] = None) -> Effective:
    kmod = kernel_load(project)
    script_text = project.script_path.read_text(encoding="utf-8")
    with kernel_errors(kmod):
        overrides = dict(kmod.read_overrides_block(script_text))
        overrides.update(kmod.parse_sets(list(sets)))
        if extra:
            overrides.update(extra)
        cfg = kmod.config_from_overrides(overrides)  # the kernel's own rule, smoke defaults included
        breakdown = kmod.param_breakdown(cfg)
        digest = kmod.config_hash(cfg)
    return Effective(kmod, cfg, overrides, breakdown, digest)


def breakdown_count(kmod, base_config, **changes) -> dict:
    """param_breakdown of ``base_config`` with ``changes`` (the planner's only way to count)."""
    with kernel_errors(kmod):
        cfg = kmod.apply_overrides(base_config, changes)
        return kmod.param_breakdown(cfg)


def script_render(project: Project, overrides: dict, push_token: str = "") -> str:
    """The build copy of the script: its overrides block filled in and, when given, a push token comment.

    The token line goes at the end, outside the block the kernel's render_overrides owns; it lets lorakit
    find this exact push among the kernel's versions when Kaggle's reply to it was lost.
    """
    kmod = kernel_load(project)
    with kernel_errors(kmod):
        rendered = kmod.render_overrides(project.script_path.read_text(encoding="utf-8"), overrides)
        if push_token:
            rendered = rendered.rstrip("\n") + f"\n\n# lorakit push token: {push_token}\n"
        try:
            compile(rendered, project.script_path.name, "exec")
            round_trip = kmod.read_overrides_block(rendered)
        except SyntaxError as exc:
            raise UsageError(
                f"the kernel's render_overrides produced a script that does not compile (line {exc.lineno}: {exc.msg})"
            ) from None
        if round_trip != json.loads(json.dumps(overrides)):
            raise UsageError("the kernel's render_overrides did not write the overrides block faithfully")
    return rendered


def submission_check(kmod, path: Path, rows: int) -> None:
    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist")
    with kernel_errors(kmod):
        kmod.validate_submission(str(path), int(rows))
