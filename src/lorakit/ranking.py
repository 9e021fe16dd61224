"""A sweep's ranking: its arms by validation accuracy (the mean over seeds), each paired with the best arm on the
same validation rows (exact McNemar; with seeds, the discordant rows summed over the seeds, each seed's slice
paired with the same seed's), Holm-corrected over the arms. `sweep` prints it, `report` draws it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

from lorakit.arms import Sweep, arm_row
from lorakit.common import ledger_of
from lorakit.errors import UsageError
from lorakit.project import Project
from lorakit.console import fmt
from lorakit.runs import Paired, PulledRun, noise_words, paired_test, pulled_run_load
from lorakit.stats import LEVEL, holm, mcnemar_exact, mean_spread, verdict


@dataclass(frozen=True)
class Ranked:
    """One arm of the sweep, its runs over the seeds, and its paired test against the best arm."""

    name: str
    sets: tuple
    versions: tuple  # one per seed (None: not pushed or not run)
    accuracies: tuple  # validation accuracy of each run that has one
    trainable_params: int
    mean: Optional[float] = None
    spread: Optional[float] = None  # sample standard deviation over the seeds (None for one seed)
    best_wins: Optional[int] = None  # validation rows the best arm got right and this one wrong
    arm_wins: Optional[int] = None
    rows: Optional[int] = None  # paired rows (summed over the seeds)
    p_value: Optional[float] = None
    p_holm: Optional[float] = None
    words: str = ""  # the verdict in words, or "best", or "not comparable: why"

    def as_json(self) -> dict:
        return {**asdict(self), "sets": list(self.sets), "versions": list(self.versions),
                "accuracies": list(self.accuracies)}


def _arm_runs(project: Project, sweep: Sweep) -> dict:
    """name -> [(arm, its version or None, its PulledRun or None)] in the sweep's order."""
    groups: dict = {}
    rows = ledger_of(project).rows()
    for arm in sweep.arms:
        row = arm_row(rows, sweep, arm)
        version = int(row["version"]) if row else None
        run = pulled_run_load(project, version) if row and row.get("pulled_at") else None
        groups.setdefault(arm.name, []).append((arm, version, run))
    return groups


def run_accuracy(run: Optional[PulledRun]) -> Optional[float]:
    return None if run is None else run.numbers()["val_accuracy"]


def sweep_rank(project: Project, sweep: Sweep) -> list:
    """The arms ranked by validation accuracy (the mean over seeds; arms without one last), each paired with
    the best arm seed by seed, and the p-values Holm-corrected over the arms compared."""
    ranked = []
    for name, runs in _arm_runs(project, sweep).items():
        accuracies = tuple(a for a in (run_accuracy(run) for _, _, run in runs) if a is not None)
        mean, spread = mean_spread(accuracies)
        ranked.append((Ranked(name, runs[0][0].sets, tuple(v for _, v, _ in runs), accuracies,
                              runs[0][0].trainable_params, mean, spread), runs))
    ranked.sort(key=lambda item: (item[0].mean is None, -(item[0].mean or 0.0)))
    if not ranked or ranked[0][0].mean is None:
        return [r for r, _ in ranked]
    best, best_runs = ranked[0]
    out = [replace(best, words="best")] + [_paired(best, best_runs, r, runs) for r, runs in ranked[1:]]
    tested = [i for i, r in enumerate(out) if r.p_value is not None]
    for i, adjusted in zip(tested, holm([out[i].p_value for i in tested])):
        r = out[i]
        words = verdict(best.name, r.name, r.best_wins, r.arm_wins, r.p_value, adjusted)
        out[i] = replace(r, p_holm=adjusted, words=words)
    return out


def _paired(best: Ranked, best_runs: list, arm: Ranked, runs: list) -> Ranked:
    """``arm`` with its McNemar counts against ``best``: each seed's run with the best arm's run of that seed."""
    by_seed = {a.seed: run for a, _, run in best_runs}
    wins = [0, 0, 0]
    for a, _, run in runs:
        other = by_seed.get(a.seed)
        if run is None or other is None:
            missing = a.label if run is None else f"{best.name}'s seed {a.seed}"
            return replace(arm, words=f"not comparable: {missing} has no pulled run")
        try:
            paired = paired_test(other, run)
        except UsageError as exc:
            return replace(arm, words=f"not comparable: {exc}")
        wins = [wins[0] + paired.a_wins, wins[1] + paired.b_wins, wins[2] + paired.rows]
    return replace(arm, best_wins=wins[0], arm_wins=wins[1], rows=wins[2], p_value=mcnemar_exact(wins[0], wins[1]))


def ranked_table(sweep: Sweep, ranked: list) -> tuple:
    """(headers, rows, caption) of the ranked arms, as `sweep` prints them and `report` draws them."""
    seeds = sweep.options.seeds > 1
    headers = ["#", "arm", "versions", "settings", "trainable", "mean val_acc" if seeds else "val_acc",
               *(["spread"] if seeds else []), "wins best/arm", "p", "p (Holm)", "vs best"]
    rows = []
    for i, r in enumerate(ranked, start=1):
        wins = "-" if r.best_wins is None else f"{r.best_wins}/{r.arm_wins} of {r.rows}"
        rows.append([i, r.name, ",".join(f"v{v}" for v in r.versions if v) or "-", " ".join(r.sets) or "-",
                     f"{r.trainable_params:,}", fmt(r.mean), *([fmt(r.spread)] if seeds else []), wins,
                     _p(r.p_value), _p(r.p_holm), r.words or "no validation accuracy"])
    caption = ("p: exact McNemar test against the best on the same validation rows"
               + (" (summed over the seeds, each paired with the best's run of the same seed)" if seeds else "")
               + "; p (Holm): corrected for the arms compared, and what the verdict goes by")
    return headers, rows, caption


def _p(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2g}"


def ranked_noise(ranked: list) -> str:
    """"" unless the best arm cannot be told from others (Holm-adjusted p >= 0.05); then which, and roughly how
    many validation rows would tell it from the closest (runs.noise_words)."""
    if not ranked or ranked[0].mean is None:
        return ""
    close = [r for r in ranked[1:] if r.p_value is not None
             and ((r.p_value if r.p_holm is None else r.p_holm) >= LEVEL or r.best_wins == r.arm_wins)]
    if not close:
        return ""
    best, runner = ranked[0], close[0]
    words = noise_words(best.name, runner.name, Paired(runner.rows, runner.best_wins, runner.arm_wins,
                                                       runner.p_value), runner.p_holm)
    others = [r.name for r in close[1:]]
    return words + (f"; nor {best.name} from {', '.join(others)}" if others else "")
