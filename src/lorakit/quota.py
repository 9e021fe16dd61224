"""`lorakit quota`, and the GPU hours a push or a sweep is weighed against, as Kaggle counts them: the hours
allowed this week less those used and those held by the sessions still running (``time_reserved``).

A run's cost is estimated from this kernel's own runs: the median run minutes of its COMPLETE runs on the same
accelerator (predict-only runs apart from training runs), else the config's ``time_limit_minutes``; the
estimate says which.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Optional

from lorakit.common import ledger_of
from lorakit.console import JSON, command, fmt, plural, project_of, remote_new, table
from lorakit.errors import FlagNeeded, LorakitError
from lorakit.project import Project
from lorakit.remote import Remote
from lorakit.stats import finite_number


@dataclass(frozen=True)
class Hours:
    """One accelerator's quota this week, in hours; None for what the reply lacks."""

    used: Optional[float]
    reserved: Optional[float]  # held by sessions still running
    total: Optional[float]
    minimum: Optional[float]  # Kaggle's minimum_time_allowed

    @property
    def left(self) -> Optional[float]:
        """total - used - reserved, never below 0; None when the reply lacks the total or the use."""
        if self.used is None or self.total is None:
            return None
        return max(0.0, self.total - self.used - (self.reserved or 0.0))

    def as_json(self) -> dict:
        return {"used_hours": self.used, "reserved_hours": self.reserved, "total_hours": self.total,
                "left_hours": self.left, "minimum_hours": self.minimum}


def _hours(quota, field: str) -> Optional[float]:
    value = getattr(quota, field, None)
    return None if value is None else value.total_seconds() / 3600


def hours_of(response, asked: str = "gpu") -> Hours:
    """The quota of the accelerator ``asked`` for (a TPU shape reads the TPU quota, anything else the GPU's)."""
    quota = getattr(response, "tpu_quota" if asked.lower().startswith("tpu") else "gpu_quota", None)
    return Hours(*(_hours(quota, f) for f in ("time_used", "time_reserved", "total_time_allowed",
                                              "minimum_time_allowed")))


def gpu_hours_left(remote_of: Callable[[], Remote], asked: str = "gpu") -> tuple[Optional[float], str]:
    """(hours left this week, "") as Kaggle counts them; (None, why) when they cannot be read (no remote, a
    failed call, a reply without them)."""
    try:
        hours = hours_of(remote_of().quota_get(), asked)
    except LorakitError as exc:
        return None, f"could not read the GPU quota ({exc})"
    if hours.left is None:
        return None, "could not read the GPU quota (Kaggle returned no GPU quota)"
    return hours.left, ""


@dataclass(frozen=True)
class Estimate:
    """What a run may cost in minutes, and what the figure comes from."""

    minutes: float
    source: str

    def as_json(self) -> dict:
        return {"minutes": self.minutes, "source": self.source}


def run_estimate(rows: list, asked: str, time_limit_minutes: float, predict_only: bool = False) -> Estimate:
    """The median run minutes of the COMPLETE runs among the ledger's ``rows`` on accelerator ``asked`` (of the
    same kind: predict-only or training), else ``time_limit_minutes``."""
    measured = [finite_number(r.get("run_minutes")) for r in rows
                if r.get("status") == "COMPLETE" and r.get("accelerator") == asked
                and bool(r.get("predict_from")) == predict_only]
    measured = [m for m in measured if m is not None and m > 0]
    if measured:
        return Estimate(float(statistics.median(measured)),
                        f"median of {plural(len(measured), 'COMPLETE run')} on {asked}")
    return Estimate(float(time_limit_minutes), f"time_limit_minutes; no COMPLETE run on {asked} yet")


def quota_weigh(left: Optional[float], minutes: float, what: str, over_quota: bool) -> str:
    """Refuse (FlagNeeded: --over-quota) ``what`` when its ``minutes`` exceed the hours ``left``; what to warn
    when --over-quota overrides that; "" when it fits or ``left`` is unknown (None)."""
    if left is None or minutes / 60 <= left:
        return ""
    words = (f"{what} may take {minutes / 60:.1f} h of GPU time, but {left:.1f} h of the quota are left this week "
             "(allowed, less used, less held by running sessions)")
    if not over_quota:
        raise FlagNeeded(f"{words}: it would stop early; nothing pushed (--over-quota pushes anyway)")
    return f"{words}: pushing anyway (--over-quota)"


@dataclass(frozen=True)
class Quota:
    hours: Hours
    refresh: str
    minutes_by_version: tuple  # (version, minutes)

    def as_json(self) -> dict:
        return {**self.hours.as_json(), "refresh": self.refresh or None,
                "runs": [{"version": v, "run_minutes": m} for v, m in self.minutes_by_version]}


def quota_get(project: Project, remote: Remote) -> Quota:
    ledger = ledger_of(project)
    rows = ledger.rows()
    response = remote.quota_get()
    refresh = getattr(response, "quota_refresh_time", None)
    refresh_text = refresh.isoformat(timespec="minutes") if hasattr(refresh, "isoformat") else ""
    minutes = tuple(
        (int(r["version"]), float(r["run_minutes"])) for r in rows if finite_number(r.get("run_minutes")) is not None
    )
    return Quota(hours_of(response), refresh_text, minutes)


# ------------------------------------------------------------------------------------- the command line
@command("quota", "GPU hours used, held by running sessions and left this week (as Kaggle counts them), and the "
                  "run minutes per version", JSON)
def cmd_quota(args) -> int:
    out = args.out
    q = quota_get(project_of(args), remote_new())
    h = q.hours
    out.document(q.as_json())
    if h.used is None:
        out.result("GPU quota: Kaggle returned no GPU quota")
    else:
        out.result(f"GPU quota this week: {h.used:.2f} h used, {fmt(h.left, 2)} h left of {fmt(h.total, 2)} h"
                   + (f" (refreshes {q.refresh} UTC)" if q.refresh else ""))
        out.result(f"  held by running sessions: {fmt(h.reserved or 0.0, 2)} h (already subtracted from what is "
                   f"left); minimum_time_allowed: {fmt(h.minimum, 2)} h")
    if q.minutes_by_version:
        out.result(table(["version", "run minutes"], [[f"v{v}", f"{m:.1f}"] for v, m in q.minutes_by_version]))
        total = sum(m for _, m in q.minutes_by_version)
        out.result(f"recorded runs: {total:.1f} min ({total / 60:.2f} h) over "
                   f"{plural(len(q.minutes_by_version), 'version')}")
    else:
        out.result("no run minutes recorded yet (lorakit pull fills them)")
    return 0
