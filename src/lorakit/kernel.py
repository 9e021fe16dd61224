"""The one door to the kernel script: the only lorakit module that sees it.

There is one implementation of the config rules, the count, the hash and the CSV checks: the kernel's own
(``kernel/agnews_lora.py``), loaded as a module by :func:`kernel_module_load` (also the loader of bench/,
docs/generate.py and the tests). The rest of lorakit reaches it only through the typed functions and the
:class:`Effective` config here, which turn the kernel's errors into lorakit's.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import sys
import warnings
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Optional

from lorakit.errors import NotFound, UsageError
from lorakit.project import Project

KERNEL_MODULE = "agnews_lora"
_LOADED: dict = {}  # module name -> (path, mtime_ns, size, module)
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a loaded kernel -> its source's sha256
_COUNTS: dict = {}  # (a kernel's source sha256, repr of a Config) -> its param_breakdown


def kernel_module_load(script: os.PathLike, name: str = KERNEL_MODULE) -> ModuleType:
    """The kernel script imported as the module ``name`` (``agnews_lora``), its folder first on sys.path.

    The one loader of the kernel for lorakit, bench/, docs/generate.py and the tests. Importing it under its own name, from a
    folder on sys.path, lets spawned data-parallel processes import it too. A different script, or the same
    one changed on disk, replaces the module; bench loads variant copies under another ``name``. The module
    must define every name in its ``PUBLIC_API`` (what lorakit uses) and ``BENCH_API`` (what bench/ and docs/
    reach). Only ``agnews_lora`` itself goes on sys.path.
    """
    script = Path(script).resolve()
    try:
        stat = script.stat()
    except OSError as exc:
        raise UsageError(f"cannot read the kernel script {script}: {exc.strerror}")
    key = (script, stat.st_mtime_ns, stat.st_size)
    cached = _LOADED.get(name)
    if cached and cached[:3] == key and sys.modules.get(name) is cached[3]:
        return cached[3]
    if name == KERNEL_MODULE:  # spawned processes find it by name; only one kernel folder may lead
        for folder in {str(script.parent), str(cached[0].parent) if cached else ""} & set(sys.path):
            sys.path.remove(folder)
        sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load the kernel script {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{script.name} needs {exc.name}, one of the kernel's dependencies: "
                         f"{kernel_install_hint(exc.name)}")
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{script.name} does not compile: line {exc.lineno}: {exc.msg}")
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"loading {script.name} failed: {type(exc).__name__}: {exc}")
    listed = (*getattr(module, "PUBLIC_API", ("PUBLIC_API",)), *getattr(module, "BENCH_API", ("BENCH_API",)))
    missing = [attr for attr in listed if not hasattr(module, attr)]
    if missing:
        sys.modules.pop(name, None)
        raise UsageError(f"{script.name} does not define {', '.join(missing)}; is code_file the AG News LoRA kernel?")
    _LOADED[name] = (*key, module)
    _SOURCES[module] = hashlib.sha256(script.read_bytes()).hexdigest()
    return module


def params_counted(kmod: ModuleType, cfg: Any) -> dict:
    """``kmod.param_breakdown(cfg)``, counted once per kernel source and config in this process: the count builds
    the model (on the meta device, yet ~0.3 s), and a sweep's seeds, a run's check and push, share one."""
    key = (_SOURCES.get(kmod), repr(cfg))
    if key[0] is None:  # a kernel not loaded by kernel_module_load: nothing to key its count by
        return kmod.param_breakdown(cfg)
    if key not in _COUNTS:
        _COUNTS[key] = kmod.param_breakdown(cfg)
    return copy.deepcopy(_COUNTS[key])


def lorakit_checkout() -> Optional[Path]:
    """The source checkout lorakit runs from (an editable install or src/ on sys.path); None when installed."""
    root = Path(__file__).resolve().parents[2]
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if re.search(r'(?m)^name\s*=\s*"lorakit"', text) else None


def kernel_install_hint(missing: Optional[str]) -> str:
    """The command that installs the kernel's dependencies: the checkout's `kernel` extra, else (lorakit
    installed from a package, whose extra no registry serves) the packages that extra names."""
    checkout = lorakit_checkout()
    if checkout is not None:
        where = "." if checkout == Path.cwd().resolve() else str(checkout)
        return f"pip install -e '{where}[kernel]'"
    from importlib.metadata import PackageNotFoundError, requires

    try:
        listed = requires("lorakit") or []
    except PackageNotFoundError:
        listed = []
    packages = [r.split(";")[0].strip() for r in listed if re.search(r"extra\s*==\s*['\"]kernel['\"]", r)]
    return "pip install " + " ".join(f"'{p}'" for p in packages or [missing or "torch"])



# The script lorakit ships (a link to kernel/agnews_lora.py in a checkout, a copy in an installed wheel).
PACKAGED_KERNEL = Path(__file__).with_name("kernel_script") / "agnews_lora.py"


def kernel_labels(script: Path = PACKAGED_KERNEL) -> tuple:
    """The class names, as the kernel script's LABELS line defines them: read as a literal, never run, so that
    the commands that only read outputs (compare of two files, report) need not import torch."""
    match = re.search(r"(?m)^LABELS = (\([^)]*\))", script.read_text(encoding="utf-8"))
    try:
        labels = ast.literal_eval(match.group(1)) if match else None
    except (ValueError, SyntaxError):
        labels = None
    if not isinstance(labels, tuple) or not all(isinstance(name, str) for name in labels):
        raise UsageError(f"{script} does not define LABELS as a tuple of class names")
    return labels


def _kernel_of(project: Optional[Project]) -> ModuleType:
    """The project's kernel script (its code_file), or the copy lorakit ships when there is no repository."""
    return kernel_module_load(project.script_path if project is not None else PACKAGED_KERNEL)


@contextlib.contextmanager
def _kernel_errors(kmod: ModuleType, prefix: str = ""):
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
    """The effective config of a push (the script's block, then the --set overrides), validated by the kernel,
    with its exact count; what else lorakit asks of that kernel goes through its methods."""

    config: Any  # the kernel's Config
    overrides: dict  # what the build copy's overrides block will hold
    breakdown: dict
    config_hash: str
    _kmod: ModuleType = field(repr=False, compare=False)

    @property
    def trainable_params(self) -> int:
        return int(self.breakdown["total"])

    @property
    def budget(self) -> int:
        return int(self.config.param_budget)

    @property
    def within_budget(self) -> bool:
        return self.trainable_params <= self.budget

    @property
    def default_model(self) -> str:
        """The kernel's default encoder (a predict-from run on it loads the one its adapter was trained on)."""
        return str(self._kmod.Config.model)

    @property
    def ag_news_dataset(self) -> str:
        """The Kaggle dataset of AG News CSVs the kernel finds when the internet is off."""
        return str(self._kmod.AG_NEWS_DATASET)

    @property
    def heads(self) -> tuple:
        return tuple(self._kmod.HEADS)

    def breakdown_text(self) -> str:
        return self._kmod.format_breakdown(self.breakdown, self.budget)

    @property
    def budget_warning(self) -> str:
        """The kernel's word on a param_budget above the competition's 1M rule ("" within it)."""
        return self._kmod.budget_warning(self.trainable_params, self.budget)

    def usable_positions(self) -> Optional[int]:
        """The encoder's usable positions; None when its config is not here offline (a hub id)."""
        return self._kmod.usable_positions(self.config)

    def count(self, **changes) -> dict:
        """The exact param_breakdown of this config with ``changes`` (the planner's only way to count)."""
        with _kernel_errors(self._kmod):
            return params_counted(self._kmod, self._kmod.apply_overrides(self.config, changes))

    def trained(self, trained_config: dict, where: str) -> "Effective":
        """This push with the count of the config an adapter was trained with (its kit.json's, at ``where``)."""
        keys = {k: v for k, v in trained_config.items() if k in self._kmod.CONFIG_KEYS}
        with _kernel_errors(self._kmod, f"{where}: "):
            breakdown = params_counted(self._kmod, self._kmod.apply_overrides(self._kmod.Config(), keys))
        return replace(self, breakdown=breakdown)


def config_effective(project: Project, sets: Iterable[str] = (), extra: Optional[dict] = None) -> Effective:
    """The script's overrides block, then ``sets`` (KEY=VALUE), then ``extra``: validated and counted."""
    kmod = _kernel_of(project)
    script_text = project.script_path.read_text(encoding="utf-8")
    with _kernel_errors(kmod):
        overrides = dict(kmod.read_overrides_block(script_text))
        overrides.update(kmod.parse_sets(list(sets)))
        overrides.update(extra or {})
        cfg = kmod.config_from_overrides(overrides)  # the kernel's own rule, smoke defaults included
        return Effective(cfg, overrides, params_counted(kmod, cfg), kmod.config_hash(cfg), kmod)


def script_render(project: Project, effective: Effective, push_token: str = "",
                  push_record: Optional[dict] = None) -> str:
    """The build copy of the script: its overrides block holding ``effective``'s overrides (validated when
    ``effective`` was made), its push record block holding ``push_record`` when given (render_push_record
    escapes every value as JSON) and, when given, a push token comment; refused when it does not compile.

    The token line goes at the end, outside the blocks the kernel owns; it lets lorakit find this exact push
    among the kernel's versions when Kaggle's reply to it was lost.
    """
    kmod = effective._kmod
    with _kernel_errors(kmod):
        rendered = render_overrides(kmod, project.script_path.read_text(encoding="utf-8"), effective.overrides)
        if push_record is not None:
            rendered = render_push_record(kmod, rendered, push_record)
    if push_token:
        rendered = rendered.rstrip("\n") + f"\n\n# lorakit push token: {push_token}\n"
    try:
        compile(rendered, project.script_path.name, "exec")
    except SyntaxError as exc:
        raise UsageError(f"rendering the overrides produced a script that does not compile "
                         f"(line {exc.lineno}: {exc.msg})") from None
    return rendered


def _block_spliced(script_text: str, match: re.Match, body: str) -> str:
    """The script with the block ``match`` found holding ``body`` instead."""
    start, end = match.span(1)
    return script_text[:start] + body + script_text[end:]


def render_overrides(kmod: ModuleType, script_text: str, overrides: dict) -> str:
    """The script with its overrides block (the kernel's OVERRIDES_RE) holding ``overrides``, checked first by
    the kernel's rules."""
    match = kmod.block_match(kmod.OVERRIDES_RE, script_text, "overrides block")
    kmod.config_from_overrides(overrides)
    body = json.dumps(overrides, indent=2, sort_keys=True)
    if '"""' in body:
        raise UsageError('override values may not contain """')
    return _block_spliced(script_text, match, body)


def render_push_record(kmod: ModuleType, script_text: str, record: dict) -> str:
    """The script with its push record block (the kernel's PUSH_RECORD_RE) holding ``record`` as ASCII JSON:
    every quote, backslash, newline and non-ASCII character of a value escaped, so no text ends the raw string
    or reaches the code."""
    match = kmod.block_match(kmod.PUSH_RECORD_RE, script_text, "push record")
    try:
        body = json.dumps(record, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the push record cannot be written as JSON: {exc}") from None
    if kmod.push_record_object(body) != record:
        raise UsageError("the push record does not read back as written (its keys must be strings)")
    return _block_spliced(script_text, match, body)


PUSH_TOKEN_LINE = re.compile(r"(?m)^# lorakit push token: (lk-[0-9a-f]+)\s*$")


@dataclass(frozen=True)
class PushedSource:
    """What a version's script, as Kaggle holds it, says of its push: read as data (JSON), never run.
    ``problems`` says what could not be read (a script lorakit did not render, a damaged block)."""

    token: str  # the push token comment ("" when none)
    overrides: Optional[dict]  # the overrides block; None when unreadable
    record: dict  # the push record block; {} for a version pushed before lorakit wrote one
    problems: tuple = ()


def pushed_source_read(project: Project, source: str) -> PushedSource:
    """The token, overrides and push record of a pushed version's ``source``, parsed by the project's kernel."""
    kmod = _kernel_of(project)
    problems: list = []
    overrides, record = None, {}
    try:
        with _kernel_errors(kmod, "its overrides block: "):
            overrides = dict(kmod.read_overrides_block(source))
    except UsageError as exc:
        problems.append(str(exc))
    try:
        with _kernel_errors(kmod, "its push record: "):
            record = dict(kmod.read_push_record(source))
    except UsageError as exc:
        problems.append(str(exc))
    tokens = PUSH_TOKEN_LINE.findall(source)  # script_render appends it: the last one
    return PushedSource(tokens[-1] if tokens else "", overrides, record, tuple(problems))


def config_defaults(project: Optional[Project]) -> dict:
    """Every config key of the kernel with its default (what `versions` and `compare` diff against)."""
    kmod = _kernel_of(project)
    return {key: getattr(kmod.Config, key) for key in kmod.CONFIG_KEYS}


def config_list_keys(project: Optional[Project]) -> tuple:
    """The config keys whose value is a comma-separated list (lora_targets): those whose default holds a comma."""
    return tuple(k for k, v in config_defaults(project).items() if isinstance(v, str) and "," in v)


def config_resolved(project: Optional[Project], overrides: dict) -> dict:
    """The whole config ``overrides`` give (the kernel's rule: smoke defaults included), as plain values; the
    overrides over the defaults when the kernel refuses them (a ledger row from an older kernel)."""
    kmod = _kernel_of(project)
    try:
        return dataclasses.asdict(kmod.config_from_overrides(overrides))
    except kmod.KernelError:
        return {**config_defaults(project), **overrides}


def config_where_keys(project: Optional[Project]) -> tuple:
    """The config keys that say where a run read and wrote, not what it ran (the kernel's HASH_EXCLUDED)."""
    return tuple(_kernel_of(project).HASH_EXCLUDED)


def submission_check(project: Optional[Project], path: Path, rows: int) -> None:
    """The kernel's submission rules on ``path`` (the project's kernel, else the one lorakit ships)."""
    kmod = _kernel_of(project)
    if not Path(path).is_file():
        raise NotFound(f"{path} does not exist")
    with _kernel_errors(kmod):
        kmod.validate_submission(str(path), int(rows))


def adapter_digest(project: Project, folder: Path) -> str:
    """The kernel's sha256 of an adapter folder (what a predict-from run pins as adapter_sha256)."""
    return str(_kernel_of(project).adapter_digest(folder))
