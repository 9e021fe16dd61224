"""`lorakit plan`: LoRA placements and sizes that fit a trainable-parameter budget.

Counting is the kernel's ``param_breakdown`` (the meta-device model, the same code as ``check``). A LoRA
adapter on a Linear(in, out) holds r * (in + out) parameters, so the count of a placement is linear in the
rank and additive over module types and layers. The planner measures a small basis exactly (one
``param_breakdown`` per module type at r=1, one per head), ranks every enumerated candidate with it, and
then counts each printed candidate exactly with ``param_breakdown`` again: every printed number is exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from lorakit.errors import UsageError
from lorakit.kernel import breakdown_count, kernel_errors, kernel_load
from lorakit.project import Project

TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Candidate:
    head: str
    targets: tuple
    r: int
    layers: str
    lora: int
    head_params: int
    other: int
    total: int

    @property
    def sets(self) -> list:
        return [
            f"head={self.head}",
            f"lora_targets={','.join(self.targets)}",
            f"lora_r={self.r}",
            f"lora_layers={self.layers}",
        ]

    @property
    def set_string(self) -> str:
        return " ".join(f"--set {s}" for s in self.sets)

    def as_json(self) -> dict:
        return {
            "head": self.head,
            "lora_targets": ",".join(self.targets),
            "lora_r": self.r,
            "lora_layers": self.layers,
            "lora": self.lora,
            "head_params": self.head_params,
            "other": self.other,
            "total": self.total,
            "set": self.set_string,
        }


@dataclass(frozen=True)
class Plan:
    budget: int
    layers: int
    candidates: tuple  # exact, sorted by LoRA count, largest first
    enumerated: int
    fitting: int


def _split(values: Optional[Iterable[str]]) -> list:
    out = []
    for value in values or []:
        out.extend(v.strip() for v in str(value).split(",") if v.strip())
    return out


def budget_plan(
    project: Project,
    budget: Optional[int] = None,
    top: int = 20,
    heads: Optional[Sequence[str]] = None,
    targets: Optional[Sequence[str]] = None,
    ranks: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
) -> Plan:
    if top < 1:
        raise UsageError("--top must be positive")
    kmod = kernel_load(project)
    base = kmod.Config()
    budget = int(budget if budget is not None else base.param_budget)
    if budget < 1:
        raise UsageError("--budget must be positive")
    head_choices = _split(heads) or list(getattr(kmod, "HEADS", ("linear", "roberta")))
    known_heads = tuple(getattr(kmod, "HEADS", head_choices))
    bad = [h for h in head_choices if h not in known_heads]
    if bad:
        raise UsageError(f"unknown head {bad[0]!r}; choose from {', '.join(known_heads)}")
    if targets:
        subsets = []
        for group in targets:
            names = tuple(t.strip() for t in str(group).split(",") if t.strip())
            if not names:
                raise UsageError("--targets needs module names, e.g. query,value")
            subsets.append(names)
    else:
        subsets = [c for n in range(1, len(TARGETS) + 1) for c in itertools.combinations(TARGETS, n)]
    try:
        rank_choices = sorted({int(r) for r in _split(ranks)}) or list(DEFAULT_RANKS)
    except ValueError:
        raise UsageError("--ranks takes integers, e.g. 4,8,16")
    if any(r < 1 for r in rank_choices):
        raise UsageError("--ranks must be >= 1")

    # Exact basis, all on the meta device through the kernel's param_breakdown.
    names = sorted({t for s in subsets for t in s})
    per_target = {}
    with kernel_errors(kmod):
        for name in names:
            b = breakdown_count(kmod, base, lora_targets=name, lora_r=1, lora_layers="all", head=head_choices[0])
            per_target[name] = sum(b["lora"].values())
        one = breakdown_count(kmod, base, lora_targets=names[0], lora_r=1, lora_layers="top:1", head=head_choices[0])
    n_layers = per_target[names[0]] // max(1, sum(one["lora"].values()))
    heads_cost = {}
    for head in head_choices:
        b = breakdown_count(kmod, base, lora_targets=names[0], lora_r=1, lora_layers="all", head=head)
        heads_cost[head] = (b["head"], b["other"])
    layer_choices = _split(layers) or ["all"] + [f"top:{k}" for k in range(n_layers - 1, 0, -1)]
    for choice in layer_choices:
        if choice != "all" and not (choice.startswith("top:") and choice[4:].isdigit() and int(choice[4:]) >= 1):
            raise UsageError(f"--layers takes all or top:K, got {choice!r}")

    def share(choice: str) -> int:
        return n_layers if choice == "all" else min(n_layers, int(choice[4:]))

    estimates = []
    for head, subset, r, choice in itertools.product(head_choices, subsets, rank_choices, layer_choices):
        lora = r * sum(per_target[t] for t in subset) * share(choice) // n_layers
        head_params, other = heads_cost[head]
        estimates.append((lora, head_params + other + lora, head, subset, r, choice))
    fitting = [e for e in estimates if e[1] <= budget]
    if not fitting:
        smallest = min(estimates, key=lambda e: e[1])
        raise UsageError(
            f"no configuration fits a budget of {budget:,}: the smallest enumerated one needs {smallest[1]:,} "
            f"(head={smallest[2]}, lora_targets={','.join(smallest[3])}, lora_r={smallest[4]}, lora_layers={smallest[5]})"
        )
    fitting.sort(key=lambda e: (-e[0], e[1], -share(e[5]), e[4], len(e[3]), e[2], e[3]))
    chosen: list[Candidate] = []
    for lora, _total, head, subset, r, choice in fitting:
        b = breakdown_count(kmod, base, lora_targets=",".join(subset), lora_r=r, lora_layers=choice, head=head)
        if b["total"] > budget:  # the linear model was wrong for this one: trust the exact count
            continue
        chosen.append(
            Candidate(head, tuple(subset), r, choice, sum(b["lora"].values()), b["head"], b["other"], b["total"])
        )
        if len(chosen) >= top:
            break
    chosen.sort(key=lambda c: (-c.lora, c.total))
    return Plan(budget, n_layers, tuple(chosen), len(estimates), len(fitting))
