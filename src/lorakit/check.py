"""`lorakit check`: the offline preflight every push runs first (metadata, compile, the kernel's config rules,
the exact count, nothing to download with the internet off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from lorakit.common import AG_NEWS_ROWS, LABELS
from lorakit.console import JSON, SETS, command, err, project_of, warn
from lorakit.errors import UsageError
from lorakit.kernel import Effective, config_effective
from lorakit.project import Project, adapter_version_of, script_compile_check
from lorakit.transport import json_loads_safe


@dataclass(frozen=True)
class CheckReport:
    effective: Effective
    warnings: tuple
    positions: Optional[int]  # the encoder's usable positions; None when its config is not here offline

    def as_json(self) -> dict:
        e = self.effective
        return {
            "trainable_params": e.trainable_params,
            "param_breakdown": e.breakdown,
            "within_budget": e.within_budget,
            "config_hash": e.config_hash,
            "param_budget": e.budget,
            "overrides": e.overrides,
            "usable_positions": self.positions,
        }

    def lengths_text(self) -> str:
        cfg = self.effective.config
        if self.positions is None:
            return (f"unchecked: the config of {cfg.model} is not here offline (a hub id); the kernel checks "
                    "max_length and predict_max_length when it runs")
        return (f"max_length {cfg.max_length}, predict_max_length {cfg.predict_max_length} within the "
                f"{self.positions} usable positions of {cfg.model}")


def config_check(project: Project, sets: Iterable[str] = (), extra: Optional[dict] = None) -> CheckReport:
    """Offline preflight: metadata (already validated by project_load), compile, config (the kernel's rules,
    lengths included where the encoder's config is at hand), exact count, and nothing to download when the
    metadata turns the internet off."""
    script_compile_check(project.script_path)
    effective = config_effective(project, sets, extra)
    needs, warnings = internet_needs(project, effective)
    if needs:
        raise UsageError("enable_internet is false in kernel-metadata.json, but " + "; and ".join(needs)
                         + " (or set enable_internet to true)")
    few = val_rows_warning(effective.config)
    return CheckReport(effective, (*project.warnings, *warnings, *([few] if few else [])), effective.usable_positions())


VAL_ROWS_LEAST = 500  # fewer validation rows cannot tell runs a point or two apart: compare would say "noise"


def val_rows_expected(cfg) -> tuple:
    """(about how many validation rows the config leaves, of how many training rows); (None, None) when unknown
    (a smoke run's synthetic data, a training file of unknown size). The kernel holds out val_fraction of each
    class (one row at least) of the training rows: max_train_samples when set, else AG News' (balanced)."""
    known = AG_NEWS_ROWS if cfg.train_data in ("auto", "hf:ag_news") else None
    rows = min(r for r in (known, cfg.max_train_samples) if r) if (known or cfg.max_train_samples) else None
    if cfg.smoke or rows is None:
        return None, None
    return len(LABELS) * max(1, round(rows / len(LABELS) * cfg.val_fraction)), rows


def val_rows_warning(cfg) -> str:
    """A warning when the config leaves fewer than VAL_ROWS_LEAST validation rows, naming val_fraction; "" else."""
    rows, of = val_rows_expected(cfg)
    if rows is None or rows >= VAL_ROWS_LEAST:
        return ""
    source = f"the {of:,} rows of max_train_samples" if cfg.max_train_samples == of else f"{of:,} training rows"
    return (f"these settings leave about {rows} validation rows (val_fraction {cfg.val_fraction:g} of {source}), "
            f"fewer than {VAL_ROWS_LEAST}: too few to tell runs a point or two apart; raise val_fraction (or "
            "max_train_samples)")


def encoder_of(project: Project, effective: Effective) -> Optional[str]:
    """The pretrained encoder a run loads (a hub id or a folder); None when it needs none: a smoke run's is a
    tiny random one, and a predict-from adapter may carry its own base. The kernel's rule (load_adapter_model):
    a predict-from run on the default model loads the encoder its adapter was trained on."""
    cfg = effective.config
    if cfg.smoke:
        return None
    if not cfg.adapter_from or cfg.model != effective.default_model:
        return cfg.model
    version = adapter_version_of(cfg.adapter_from)
    folder = project.version_dir(version) / "adapter" if version else Path(cfg.adapter_from)
    if (folder / "base").is_dir():
        return None
    kit = json_loads_safe((folder / "kit.json").read_text(encoding="utf-8")) if (folder / "kit.json").is_file() else None
    trained = kit.get("config") if isinstance(kit, dict) else None
    return str(trained.get("model") or cfg.model) if isinstance(trained, dict) else cfg.model


def internet_needs(project: Project, effective: Effective) -> tuple[list, list]:
    """What a run would download although kernel-metadata.json has enable_internet false, each with what to
    attach instead; and warnings where it cannot be told offline. (Nothing when the internet is on.)"""
    if str(project.metadata.get("enable_internet", True)).lower() != "false":
        return [], []
    cfg = effective.config
    needs, warnings = [], []
    encoder = encoder_of(project, effective)
    if encoder is not None and not encoder.startswith("/"):
        needs.append(f"model {encoder} is a Hugging Face hub id, which needs the internet: attach a copy (a Kaggle "
                     "model in model_sources, or a dataset) and pass --set model=/kaggle/input/<its folder>")
    datasets = [d for d in project.metadata.get("dataset_sources") or []]
    attach = f"attach the AG News CSVs {effective.ag_news_dataset} in dataset_sources and keep train_data=auto"
    if cfg.train_data.startswith("hf:"):
        needs.append(f"train_data {cfg.train_data} downloads from the Hugging Face hub: {attach}")
    elif cfg.train_data == "auto" and not cfg.smoke and effective.ag_news_dataset not in datasets:
        fallback = "train_data auto falls back to hf:ag_news, which needs the internet, when no attached dataset " \
                   "holds AG News's train.csv"
        if datasets:
            warnings.append(f"{fallback}; unless one of {', '.join(datasets)} does, {attach}")
        else:
            needs.append(f"{fallback} (none is attached): {attach}")
    return needs, warnings


# ------------------------------------------------------------------------------------- the command line
@command("check", "offline preflight: exact trainable count, budget verdict, metadata and script checks", SETS, JSON)
def cmd_check(args) -> int:
    out = args.out
    project = project_of(args)
    report = config_check(project, args.sets)
    e = report.effective
    for warning in report.warnings:
        warn(warning)
    out.document(report.as_json())
    out.result(f"script     {project.script_path.relative_to(project.root)} (compiles)")
    out.result(f"metadata   {project.metadata_path.name}: {project.kernel}, competition {project.competition} (valid)")
    out.result(f"overrides  {json.dumps(e.overrides, sort_keys=True)}")
    out.result(e.breakdown_text())
    out.result(f"config_hash {e.config_hash}")
    out.result(f"lengths    {report.lengths_text()}")
    out.result(f"verdict    {'within' if e.within_budget else 'OVER'} budget: {e.trainable_params:,} of "
               f"{e.budget:,} trainable parameters")
    if not e.within_budget:
        err(f"lorakit: error: {e.trainable_params:,} trainable parameters exceed param_budget {e.budget:,}")
        return 1
    return 0
