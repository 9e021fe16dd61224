"""`lorakit quota`, and the GPU hours a push weighs its run against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from lorakit.common import ledger_of
from lorakit.console import JSON, command, fmt, plural, project_of, remote_new, table
from lorakit.errors import LorakitError
from lorakit.project import Project
from lorakit.remote import Remote
from lorakit.stats import finite_number


def quota_check(remote: Remote, config, asked: str, warn: Callable[[str], None], notes: list) -> None:
    """``warn`` when the run's time limit does not fit in the GPU hours left this week; a note when the quota
    cannot be read (never a refusal); nothing when it fits or no GPU is asked for."""
    if asked == "none":
        return
    limit_hours = float(getattr(config, "time_limit_minutes", 0) or 0) / 60
    left, why = gpu_hours_left(lambda: remote)
    if left is None:
        notes.append(f"{why}; pushed without comparing the run's time limit")
    elif limit_hours > left:
        warn(f"the run may take up to {limit_hours:.1f} h (time_limit_minutes {config.time_limit_minutes:g}), but "
             f"{left:.1f} h of GPU quota are left this week: it may stop early; pushing anyway")


def gpu_hours_left(remote_of: Callable[[], Remote]) -> tuple[Optional[float], str]:
    """(GPU hours left this week, "") from Kaggle's quota; (None, why) when they cannot be read (no remote, a
    failed call, a reply without them)."""
    try:
        used, total = gpu_hours(remote_of().quota_get())
    except LorakitError as exc:
        return None, f"could not read the GPU quota ({exc})"
    if used is None or total is None:
        return None, "could not read the GPU quota (Kaggle returned no GPU quota)"
    return max(0.0, total - used), ""


def gpu_hours(response) -> tuple[Optional[float], Optional[float]]:
    """(used, allowed) GPU hours this week of a quota reply; None for what it lacks."""
    gpu = getattr(response, "gpu_quota", None)
    used, total = getattr(gpu, "time_used", None), getattr(gpu, "total_time_allowed", None)
    return (None if used is None else used.total_seconds() / 3600,
            None if total is None else total.total_seconds() / 3600)


@dataclass(frozen=True)
class Quota:
    used_hours: Optional[float]
    total_hours: Optional[float]
    refresh: str
    minutes_by_version: tuple  # (version, minutes)

    @property
    def left_hours(self) -> Optional[float]:
        if self.used_hours is None or self.total_hours is None:
            return None
        return max(0.0, self.total_hours - self.used_hours)

    def as_json(self) -> dict:
        return {
            "used_hours": self.used_hours,
            "total_hours": self.total_hours,
            "left_hours": self.left_hours,
            "refresh": self.refresh or None,
            "runs": [{"version": v, "run_minutes": m} for v, m in self.minutes_by_version],
        }


def quota_get(project: Project, remote: Remote) -> Quota:
    ledger = ledger_of(project)
    rows = ledger.rows()
    response = remote.quota_get()
    used, total = gpu_hours(response)
    refresh = getattr(response, "quota_refresh_time", None)
    refresh_text = refresh.isoformat(timespec="minutes") if hasattr(refresh, "isoformat") else ""
    minutes = tuple(
        (int(r["version"]), float(r["run_minutes"])) for r in rows if finite_number(r.get("run_minutes")) is not None
    )
    return Quota(used, total, refresh_text, minutes)


# ------------------------------------------------------------------------------------- the command line
@command("quota", "GPU hours used and left this week, and the run minutes per version", JSON)
def cmd_quota(args) -> int:
    out = args.out
    q = quota_get(project_of(args), remote_new())
    out.document(q.as_json())
    if q.used_hours is None:
        out.result("GPU quota: Kaggle returned no GPU quota")
    else:
        out.result(
            f"GPU quota this week: {q.used_hours:.2f} h used, {fmt(q.left_hours, 2)} h left of "
            f"{fmt(q.total_hours, 2)} h" + (f" (refreshes {q.refresh} UTC)" if q.refresh else "")
        )
    if q.minutes_by_version:
        out.result(table(["version", "run minutes"], [[f"v{v}", f"{m:.1f}"] for v, m in q.minutes_by_version]))
        total = sum(m for _, m in q.minutes_by_version)
        out.result(f"recorded runs: {total:.1f} min ({total / 60:.2f} h) over "
                   f"{plural(len(q.minutes_by_version), 'version')}")
    else:
        out.result("no run minutes recorded yet (lorakit pull fills them)")
    return 0
