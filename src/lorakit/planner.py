"""`lorakit plan`: the default configuration, then every LoRA placement that fits the budget at its largest rank,
marked where the accuracy bench has evidence for it.

Counting is the kernel's ``param_breakdown`` (the meta-device model, the same code as ``check``). A LoRA
adapter on a Linear(in, out) holds r * (in + out) parameters, so the count of a placement is linear in the
rank and additive over module types and layers. The planner measures a small basis exactly (one
``param_breakdown`` per module type at r=1, one per head), finds each placement's largest fitting rank with it,
and counts every printed row exactly with ``param_breakdown`` again: every printed number is exact.

The evidence comes from ``bench/accuracy_evidence.json``, which ``bench/accuracy.py`` writes with its report.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lorakit.console import JSON, command, flag, project_of, table
from lorakit.errors import ArgumentError, UsageError
from lorakit.kernel import Effective, config_effective
from lorakit.project import Project

TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
SHORT_TARGETS = {"dense": ("attention.output.dense", "intermediate.dense", "output.dense")}
SHORT_NAMES = {"attention.output.dense": "attn.out", "intermediate.dense": "ffn.in", "output.dense": "ffn.out"}
DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64)
EVIDENCE_FILE = Path("bench") / "accuracy_evidence.json"


@dataclass(frozen=True)
class Candidate:
    head: str
    targets: tuple
    r: int
    alpha: float
    layers: str
    lora: int
    head_params: int
    other: int
    total: int
    default: bool = False
    evidence: str = ""  # what the accuracy bench measured for exactly these settings, if anything

    @property
    def placement(self) -> str:
        return ",".join(self.targets)

    @property
    def short_placement(self) -> str:
        return ",".join(SHORT_NAMES.get(t, t) for t in self.targets)

    @property
    def sets(self) -> list:
        return [f"head={self.head}", f"lora_targets={self.placement}", f"lora_r={self.r}",
                f"lora_alpha={self.alpha:g}", f"lora_layers={self.layers}"]

    @property
    def set_string(self) -> str:
        return " ".join(f"--set {s}" for s in self.sets)

    def as_json(self) -> dict:
        return {
            "default": self.default,
            "head": self.head,
            "lora_targets": self.placement,
            "lora_r": self.r,
            "lora_alpha": self.alpha,
            "lora_layers": self.layers,
            "lora": self.lora,
            "head_params": self.head_params,
            "other": self.other,
            "total": self.total,
            "evidence": self.evidence or None,
            "set": self.set_string,
        }


@dataclass(frozen=True)
class Plan:
    budget: int
    layers: int
    candidates: tuple  # the default first, then placements with evidence, then the rest by LoRA size
    enumerated: int  # placements considered (head x targets x layers)
    fitting: int  # placements with at least one rank within the budget
    evidence_source: str  # where the marks came from, or why there are none


def _split(values: Optional[Iterable[str]]) -> list:
    out = []
    for value in values or []:
        out.extend(v.strip() for v in str(value).split(",") if v.strip())
    return out


def canonical_targets(targets: str) -> frozenset:
    """Module types a lora_targets string selects, with `dense` spelled out (`dense` = all three)."""
    names = [t.strip() for t in targets.split(",") if t.strip()]
    return frozenset(n for t in names for n in SHORT_TARGETS.get(t, (t,)))


def evidence_marks(project: Project) -> tuple[dict, str]:
    """{(head, targets, r, alpha, layers): text} for every bench run that changed only the placement."""
    path = project.root / EVIDENCE_FILE
    if not path.is_file():
        return {}, f"no {EVIDENCE_FILE} in this repository: no evidence marks"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        runs = data["runs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not the accuracy bench's summary ({type(exc).__name__}); rerun bench/accuracy.py")
    marks = {}
    for run in runs:
        if run.get("other_overrides"):
            continue  # same placement as another run, different training: not placement evidence
        s = run["settings"]
        key = (s["head"], canonical_targets(s["lora_targets"]), int(s["lora_r"]), float(s["lora_alpha"]),
               s["lora_layers"])
        results = []
        for device, result in run["results"].items():
            delta = result.get("vs_default_points")
            versus = f" ({delta[0]:+.1f})" if delta else ""
            seeds = f"{result['seeds']} seed{'s' if result['seeds'] > 1 else ''}"
            results.append(f"{100 * result['val_accuracy']:.1f}%{versus} {device}, {seeds}")
        marks[key] = "; ".join(results)
    return marks, f"{EVIDENCE_FILE} ({data.get('model', 'MiniLM stand-in')}, {data.get('date', 'undated')})"


@dataclass(frozen=True)
class PlanRequest:
    """What `lorakit plan` was asked: the budget (default: the kernel's param_budget), how many rows, and the
    heads, target sets, ranks and layer choices to try (each None for all)."""

    budget: Optional[int] = None
    top: int = 20
    heads: Optional[Sequence[str]] = None
    targets: Optional[Sequence[str]] = None
    ranks: Optional[Sequence[str]] = None
    layers: Optional[Sequence[str]] = None


@dataclass(frozen=True)
class Space:
    """The placements to enumerate: heads, target subsets and ranks (layer choices need the basis)."""

    heads: list
    subsets: list
    ranks: list


@dataclass(frozen=True)
class Basis:
    """Exact counts the linear model extrapolates from: LoRA parameters per target module type at r=1 over all
    layers, the encoder's layer count, and each head's cost (head + other)."""

    per_target: dict
    layers: int
    heads_cost: dict

    def share(self, choice: str) -> int:
        """The layers a lora_layers choice covers (all, or top:K)."""
        return self.layers if choice == "all" else min(self.layers, int(choice[4:]))

    def lora_per_rank(self, subset, choice: str) -> int:
        return sum(self.per_target[t] for t in subset) * self.share(choice) // self.layers


@dataclass(frozen=True)
class Counter:
    """Exact candidates at the default's LoRA scale (alpha / r), marked with the bench's evidence."""

    effective: Effective
    budget: int
    marks: dict

    @property
    def ratio(self) -> float:
        return self.effective.config.lora_alpha / self.effective.config.lora_r

    def candidate(self, head, subset, r, choice, default=False) -> Optional[Candidate]:
        """The exact count of this placement; None when it overshoots the budget (the default never does)."""
        alpha = self.effective.config.lora_alpha if default else r * self.ratio
        b = self.effective.count(lora_targets=",".join(subset), lora_r=r, lora_alpha=alpha, lora_layers=choice,
                                 head=head)
        if b["total"] > self.budget and not default:
            return None
        key = (head, canonical_targets(",".join(subset)), r, float(alpha), choice)
        return Candidate(head, tuple(subset), r, alpha, choice, sum(b["lora"].values()), b["head"], b["other"],
                         b["total"], default, self.marks.get(key, ""))

    def default(self) -> Candidate:
        base = self.effective.config
        return self.candidate(base.head, tuple(t.strip() for t in base.lora_targets.split(",")), base.lora_r,
                              base.lora_layers, default=True)


def space_of(request: PlanRequest, effective: Effective) -> Space:
    """The heads, target subsets and ranks to try, checked."""
    head_choices = _split(request.heads) or list(effective.heads)
    bad = [h for h in head_choices if h not in effective.heads]
    if bad:
        raise ArgumentError(f"unknown head {bad[0]!r}; choose from {', '.join(effective.heads)}")
    subsets = [c for n in range(1, len(TARGETS) + 1) for c in itertools.combinations(TARGETS, n)]
    if request.targets:
        subsets = [tuple(t.strip() for t in str(group).split(",") if t.strip()) for group in request.targets]
        if not all(subsets):
            raise ArgumentError("--targets needs module names, e.g. query,value")
    try:
        rank_choices = sorted({int(r) for r in _split(request.ranks)}) or list(DEFAULT_RANKS)
    except ValueError:
        raise ArgumentError("--ranks takes integers, e.g. 4,8,16")
    if any(r < 1 for r in rank_choices):
        raise ArgumentError("--ranks must be >= 1")
    return Space(head_choices, subsets, rank_choices)


def basis_count(effective: Effective, space: Space) -> Basis:
    """The exact basis, all on the meta device through the kernel's param_breakdown."""
    names = sorted({t for s in space.subsets for t in s})
    first_head = space.heads[0]
    per_target = {}
    for name in names:
        b = effective.count(lora_targets=name, lora_r=1, lora_layers="all", head=first_head)
        per_target[name] = sum(b["lora"].values())
    one = effective.count(lora_targets=names[0], lora_r=1, lora_layers="top:1", head=first_head)
    n_layers = per_target[names[0]] // max(1, sum(one["lora"].values()))
    heads_cost = {}
    for head in space.heads:
        b = effective.count(lora_targets=names[0], lora_r=1, lora_layers="all", head=head)
        heads_cost[head] = b["head"] + b["other"]
    return Basis(per_target, n_layers, heads_cost)


def layer_choices_of(layers: Optional[Sequence[str]], basis: Basis) -> list:
    """--layers (all or top:K), checked; default: all, then every top:K."""
    choices = _split(layers) or ["all"] + [f"top:{k}" for k in range(basis.layers - 1, 0, -1)]
    for choice in choices:
        if choice != "all" and not (choice.startswith("top:") and choice[4:].isdigit() and int(choice[4:]) >= 1):
            raise ArgumentError(f"--layers takes all or top:K, got {choice!r}")
    return choices


def placements_fitting(space: Space, basis: Basis, layer_choices: list, budget: int) -> tuple[list, int]:
    """Each placement at its largest fitting rank (the linear model ranks; exact counts decide later), as
    (lora size, head, subset, rank, layers); and how many placements were enumerated."""
    placements = []
    combos = list(itertools.product(space.heads, space.subsets, layer_choices))
    for head, subset, choice in combos:
        per_rank = basis.lora_per_rank(subset, choice)
        fits = [r for r in space.ranks if r * per_rank + basis.heads_cost[head] <= budget]
        if fits:
            placements.append((max(fits) * per_rank, head, subset, max(fits), choice))
    if not placements:
        r = min(space.ranks)
        need, h, s, c = min((r * basis.lora_per_rank(s, c) + basis.heads_cost[h], h, s, c) for h, s, c in combos)
        raise UsageError(
            f"no configuration fits a budget of {budget:,}: the smallest enumerated one needs {need:,} "
            f"(head={h}, lora_targets={','.join(s)}, lora_r={r}, lora_layers={c})"
        )
    placements.sort(key=lambda p: (-p[0], -basis.share(p[4]), len(p[2]), p[1], p[2]))
    return placements, len(combos)


def candidates_chosen(counter: Counter, placements: list, ranks: list, top: int) -> list:
    """The default, then the placements with evidence, then the rest, one per (head, targets, layers), each at
    the largest rank whose exact count fits."""
    chosen = [counter.default()]
    with_evidence = [p for p in placements
                     if (p[1], canonical_targets(",".join(p[2])), p[3], p[3] * counter.ratio, p[4]) in counter.marks]
    for _lora, head, subset, r, choice in with_evidence + placements:
        if len(chosen) >= top:
            break
        same = (head, canonical_targets(",".join(subset)), choice)
        if any((c.head, canonical_targets(c.placement), c.layers) == same for c in chosen):
            continue
        for rank in sorted((x for x in ranks if x <= r), reverse=True):  # an exact count may overshoot
            candidate = counter.candidate(head, subset, rank, choice)
            if candidate is not None:
                chosen.append(candidate)
                break
    return chosen


def budget_plan(project: Project, request: PlanRequest = PlanRequest()) -> Plan:
    """The default configuration, then the placements that fit the budget, each counted exactly."""
    if request.top < 1:
        raise ArgumentError("--top must be positive")
    effective = config_effective(project)
    budget = int(request.budget if request.budget is not None else effective.config.param_budget)
    if budget < 1:
        raise ArgumentError("--budget must be positive")
    space = space_of(request, effective)
    basis = basis_count(effective, space)
    placements, enumerated = placements_fitting(space, basis, layer_choices_of(request.layers, basis), budget)
    marks, source = evidence_marks(project)
    chosen = candidates_chosen(Counter(effective, budget, marks), placements, space.ranks, request.top)
    return Plan(budget, basis.layers, tuple(chosen), enumerated, len(placements), source)


# ------------------------------------------------------------------------------------- the command line
@command(
    "plan",
    "LoRA placements and sizes that fit the budget, as ready --set strings",
    flag("--budget", type=int, metavar="N", help="trainable-parameter budget (default: the kernel's param_budget)"),
    flag("--top", type=int, default=20, metavar="K", help="how many to print (default 20)"),
    flag("--head", action="append", metavar="HEAD", help="only these heads (repeatable or comma-separated)"),
    flag("--targets", action="append", metavar="T1,T2", help="only this target set (repeatable)"),
    flag("--ranks", action="append", metavar="R1,R2", help="ranks to try (default 1,2,4,8,16,32,64)"),
    flag("--layers", action="append", metavar="L", help="all or top:K (default: all and every top:K)"),
    JSON,
)
def cmd_plan(args) -> int:
    out = args.out
    plan = budget_plan(project_of(args), PlanRequest(args.budget, args.top, args.head, args.targets, args.ranks,
                                                   args.layers))
    out.document({"budget": plan.budget, "layers": plan.layers, "enumerated": plan.enumerated,
                  "fitting": plan.fitting, "evidence_source": plan.evidence_source,
                  "configs": [c.as_json() for c in plan.candidates]})
    out.result(
        f"budget {plan.budget:,}: {plan.fitting:,} of {plan.enumerated:,} placements fit (head x targets x layers); "
        "the default first, then those the accuracy bench measured, then by LoRA size, each at its largest "
        "rank (exact counts, meta device)"
    )
    rows = [
        ["default" if c.default else i, c.short_placement, c.layers, c.head, c.r, f"{c.total:,}", c.evidence or "-",
         c.set_string]
        for i, c in enumerate(plan.candidates)
    ]
    out.result(table(["#", "lora_targets", "layers", "head", "r", "total", "MiniLM val acc (vs default)",
                       "settings"], rows))
    out.result(f"evidence: {plan.evidence_source}; attn.out = attention.output.dense, ffn.in = intermediate.dense, "
               "ffn.out = output.dense")
    return 0
