"""Seed groups: versions that ran the same config but for its seed. One run's validation accuracy moves with the
seed (the split, the initialisation and the batches follow it), so a group's mean and spread say more than any of
its runs: `versions` and `report` show them, and `compare --seeds` pairs two groups seed by seed.

A group is read from the rows `versions` lists (lorakit.versions.VersionRow: their ``config``, where-keys left
out); failed runs and pushes not confirmed yet are no member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from lorakit.console import Output, changes_text, table
from lorakit.stats import mean_spread


@dataclass(frozen=True)
class SeedGroup:
    versions: tuple  # its members, oldest first
    seeds: tuple  # each member's seed, in the same order
    changes: dict  # what the group's config changes (as `versions` lists it), the seed left out
    val: tuple  # (mean, spread, n) of the members' validation accuracy (spread None for fewer than two)
    public: tuple  # ... of their public scores
    private: tuple  # ... of their private scores

    @property
    def label(self) -> str:
        return "+".join(f"v{v}" for v in self.versions)

    def as_json(self) -> dict:
        return {"versions": list(self.versions), "seeds": list(self.seeds), "changes": self.changes,
                **{f"{name}_{part}": value for name, figures in (("val_accuracy", self.val),
                                                                   ("public_score", self.public),
                                                                   ("private_score", self.private))
                   for part, value in zip(("mean", "spread", "n"), figures)}}


def _key(row) -> Optional[str]:
    """What a row's group is known by: its config without the seed; None for a row that is no member."""
    if row.version is None or row.config is None or row.state in ("error", "sending"):
        return None
    return json.dumps({k: v for k, v in row.config.items() if k != "seed"}, sort_keys=True, default=str)


def _figures(values: list) -> tuple:
    known = [v for v in values if v is not None]
    return (*mean_spread(known), len(known))


def group_figures(rows: list) -> tuple:
    """(mean, spread, n) of the validation accuracy of a group's rows."""
    return _figures([r.val_accuracy for r in rows])


def seed_group_of(rows: list, version: int) -> list:
    """The rows of ``version``'s seed group among ``rows`` (it alone when it has none), oldest first."""
    mine = next((r for r in rows if r.version == version), None)
    key = None if mine is None else _key(mine)
    if key is None:
        return [mine] if mine is not None else []
    return sorted((r for r in rows if _key(r) == key), key=lambda r: r.version)


def seed_groups(rows: list) -> list:
    """The groups of two or more versions among ``rows`` that differ only in seed, newest group first."""
    members: dict = {}
    for row in rows:
        key = _key(row)
        if key is not None:
            members.setdefault(key, []).append(row)
    groups = []
    for group in members.values():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda r: r.version)
        changes = {k: v for k, v in group[0].changes.items() if k != "seed"}
        groups.append(SeedGroup(tuple(r.version for r in group), tuple(r.config.get("seed") for r in group), changes,
                                group_figures(group), _figures([r.public_score for r in group]),
                                _figures([r.private_score for r in group])))
    return sorted(groups, key=lambda g: -g.versions[-1])


def figures_text(figures: tuple, digits: int = 4) -> str:
    """0.9012 ± 0.0031 (n=3): a mean, its spread (the sample standard deviation) and how many runs."""
    mean, spread, n = figures
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if spread is None else f" ± {spread:.{digits}f}") + f" (n={n})"


def seed_groups_show(out: Output, groups: list) -> None:
    """The seed groups' table, below `versions`'."""
    if not groups:
        return
    rows = [[g.label, ",".join(str(s) for s in g.seeds), changes_text(g.changes, 24) or "-", figures_text(g.val),
             figures_text(g.public, 5), figures_text(g.private, 5)] for g in groups]
    out.result("")
    out.result("seed groups (versions that differ only in seed): mean ± standard deviation over the seeds")
    out.result(table(["versions", "seeds", "changes", "val_acc", "public", "private"], rows))
