"""The words every lorakit module shares: the statuses a ledger row holds, versions and tokens, the kernel a
command acts on, the overrides text, what a pulled metrics.json and a run's log say, and how a submission
names its version. No command lives here, and it imports none.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from lorakit.errors import ArgumentError, UsageError
from lorakit.kernel import kernel_labels
from lorakit.ledger import Ledger, cells, kernel_same
from lorakit.project import KernelRef, Project
from lorakit.remote import Remote
from lorakit.remote_competitions import Submission
from lorakit.stats import finite_number
from lorakit.transport import json_loads_safe

DEFAULT_TEST_ROWS = 8000
LABELS = kernel_labels()  # the class names: the kernel's own, read from the script lorakit ships
TERMINAL_KERNEL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED", "NEW_SCRIPT"}
FAILED_KERNEL = {"ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"}
_DESCRIPTION_VERSION = re.compile(r"^\s*v(\d+)\b(?:\s+([A-Za-z0-9_-]+/[A-Za-z0-9_-]+))?")
UNCONFIRMED = "UNCONFIRMED"  # sent, reply lost, and the check failed: it may or may not have gone through
NOT_PUSHED = "NOT_PUSHED"  # an UNCONFIRMED push found not to have gone through
NOT_SUBMITTED = "NOT_SUBMITTED"  # an UNCONFIRMED submission found not to have gone through


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def version_parse(value) -> int:
    try:
        version = int(str(value).lstrip("vV"))
    except (TypeError, ValueError):
        raise ArgumentError(f"a version is a positive kernel version number, got {value!r}")
    if version < 1:
        raise ArgumentError(f"a version is a positive kernel version number, got {value!r}")
    return version


def ledger_of(project: Project, ref: Optional[KernelRef] = None) -> Ledger:
    """The ledger's rows of kernel ``ref`` (default: the project's, --kernel or the metadata's)."""
    return Ledger(project.ledger_path, str(ref or project.kernel), str(project.home or project.kernel))


def token_new() -> str:
    """A unique token that finds one push or one submission on Kaggle when the reply to it was lost."""
    return "lk-" + secrets.token_hex(6)


def kernel_ref_resolve(project: Project, remote: Optional[Remote], notes: Optional[list] = None) -> KernelRef:
    ref = project.kernel
    if ref.is_placeholder:
        if remote is None:
            return ref
        owner = remote.username
        if notes is not None:
            notes.append(f"kernel-metadata.json holds the placeholder owner {ref.owner!r}: using your username {owner!r}")
        ref = ref.with_owner(owner)
    return ref


def accelerator_asked(metadata: dict, accelerator: Optional[str]) -> str:
    """What a push asks Kaggle for: --accelerator, else the metadata's machine_shape, else "gpu" when
    enable_gpu is set, else "none"."""
    shape = accelerator or metadata.get("machine_shape")
    if shape:
        return str(shape)
    return "gpu" if str(metadata.get("enable_gpu", False)).lower() == "true" else "none"


# what a message may not hold: control characters but tab and line ends, and a carriage return alone (the ledger's
# CSV would not quote it, and the row would split in two)
MESSAGE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def text_checked(text: str, what: str) -> str:
    """``text`` as it will be sent and stored; a byte that is not UTF-8, or a control character (a NUL would
    corrupt the ledger, an escape rewrite a terminal), is refused before anything is sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArgumentError(f"{what} holds a byte that is not UTF-8 text (at character {exc.start + 1}): retype it") from None
    control = MESSAGE_CONTROL.search(text)
    if control:
        raise ArgumentError(f"{what} holds a control character ({control.group()!r}, at character "
                            f"{control.start() + 1}): retype it")
    return text


def overrides_text(overrides: dict) -> str:
    """The ledger's overrides cell: canonical JSON."""
    return json.dumps(overrides, sort_keys=True, separators=(",", ":"))


def overrides_of(row: Optional[dict]) -> Optional[dict]:
    """A ledger row's overrides cell read back; None when it holds no JSON object."""
    data = json_loads_safe((row or {}).get("overrides") or "")
    return data if isinstance(data, dict) else None


AG_NEWS_ROWS = 120_000  # AG News' training split: the rows a run splits into training and validation


def failure_text(row: dict) -> str:
    """"v3 ended ERROR (CUDA out of memory)" for a ledger row whose run failed (its failure message when Kaggle
    gave one); "" for any other row."""
    if row.get("status") not in FAILED_KERNEL:
        return ""
    why = " ".join((row.get("failure_message") or "").split())
    return f"v{row.get('version')} ended {row['status']}" + (f" ({why})" if why else "")


def log_readable(raw: str) -> str:
    """Kaggle's log is a JSON list of {stream_name, time, data}; return its text."""
    data = json_loads_safe(raw)
    if isinstance(data, list) and all(isinstance(e, dict) for e in data):
        parts = []
        for event in data:
            text = event.get("data")
            if text is None:
                continue
            text = str(text)
            parts.append(text if text.endswith("\n") else text + "\n")
        return "".join(parts)
    return raw if raw.endswith("\n") or not raw else raw + "\n"


def metrics_read(folder: Path, problems: Optional[list] = None) -> Optional[dict]:
    """metrics.json of a version folder; None when absent, UsageError naming the file when it is not one a
    run writes; a field of the wrong type or out of range is left out, named in ``problems`` (metrics_parse)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        size = path.stat().st_size
        if size > METRICS_MAX_BYTES:
            raise UsageError(f"{path} is {size / 2**20:.1f} MB, more than a run's metrics.json can be "
                             f"({METRICS_MAX_BYTES // 2**20} MB)")
        return metrics_parse(path.read_bytes(), str(path), problems)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


# What lorakit believes of a metrics.json (untrusted: a pulled folder, a download): its size, its shape, and the
# ranges of the numbers commands read. The kernel's loss_curve (at most 20,000 points, about 2 MB) fits well.
METRICS_MAX_BYTES = 8 * 2**20
JSON_MAX_CONTAINERS = 200_000  # objects and lists; counted in the raw bytes, before anything is parsed
JSON_MAX_DEPTH = 32
JSON_MAX_ITEMS = 100_000  # entries of one list or object (loss_curve: 20,000 points)
NUMBER_MAX = 1e15  # no metric comes near it
CONFIG_HASH = re.compile(r"[0-9a-f]{12,64}")  # the kernel's config_hash: sha256 in hex
METRIC_RANGES = {  # key: (integer?, least, most); null is allowed everywhere: "not said"
    "val_accuracy": (False, 0, 1), "val_rows": (True, 1, 10**7), "test_rows": (True, 1, 10**7),
    "trainable_params": (True, 0, 10**10), "train_seconds": (False, 0, 10**8), "predict_seconds": (False, 0, 10**8),
    "total_seconds": (False, 0, 10**8),
}
METRIC_TYPES = {"history": list, "loss_curve": list, "config": dict, "predicted_on": dict, "device": str,
                "per_class_val_accuracy": dict, "test_label_distribution": dict, "config_hash": str}


def _finite_or_none(text: str) -> Optional[float]:
    number = float(text)
    return number if math.isfinite(number) else None  # 1e999 parses as infinity: not a number lorakit reads


def metrics_parse(raw: bytes, where: str, problems: Optional[list] = None) -> dict:
    """The JSON object of a metrics.json's bytes, checked before and after parsing: bounded size, container
    count and depth, NaN and infinities read as null, every number within NUMBER_MAX; UsageError naming
    ``where`` and what is wrong otherwise. A field commands read that is of the wrong type or out of range is
    left out (read as "not said", as a missing one is) and named in ``problems``."""
    if len(raw) > METRICS_MAX_BYTES:
        raise UsageError(f"{where} is {len(raw) / 2**20:.1f} MB, more than a run's metrics.json can be")
    if raw.count(b"{") + raw.count(b"[") > JSON_MAX_CONTAINERS:
        raise UsageError(f"{where} holds more than {JSON_MAX_CONTAINERS:,} objects and lists: not a run's metrics")
    try:
        data = json.loads(raw.decode("utf-8", errors="replace"), parse_constant=lambda _name: None,
                          parse_float=_finite_or_none)
    except RecursionError:
        raise UsageError(f"{where} is nested deeper than a run's metrics.json") from None
    except ValueError:
        raise UsageError(f"{where} is not a JSON object (cut short?)") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} is not a JSON object")
    for key, problem in _field_problems(data).items():
        del data[key]
        if problems is not None:
            problems.append(f"{where}: {problem}: read as unknown")
    problem = _json_problem(data)
    if problem:
        raise UsageError(f"{where}: {problem}")
    return data


def _field_problems(data: dict) -> dict:
    """key -> what is wrong with it, for the fields commands read."""
    found = {}
    for key, kind in METRIC_TYPES.items():
        if data.get(key) is not None and not isinstance(data[key], kind):
            found[key] = f"{key} is not a JSON {'list' if kind is list else 'object' if kind is dict else 'string'}"
    for key, (integer, least, most) in METRIC_RANGES.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
            found[key] = f"{key} {str(value)[:40]!r} is not {'an integer' if integer else 'a number'}"
        elif not least <= value <= most:
            found[key] = f"{key} {_number_text(value)} is out of range ({least:,} to {most:,})"
    if isinstance(data.get("config_hash"), str) and not CONFIG_HASH.fullmatch(data["config_hash"]):
        found["config_hash"] = f"config_hash {data['config_hash'][:24]!r} is not a config hash"  # the ledger keeps it
    return found


def _json_problem(data) -> str:
    """Deeper than JSON_MAX_DEPTH, a list or object longer than JSON_MAX_ITEMS, a number beyond NUMBER_MAX."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > JSON_MAX_DEPTH:
                return f"it is nested deeper than {JSON_MAX_DEPTH} levels"
            if len(value) > JSON_MAX_ITEMS:
                return f"a list or object of it holds {len(value):,} entries, more than {JSON_MAX_ITEMS:,}"
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > NUMBER_MAX:
            return f"it holds the number {_number_text(value)}, beyond any metric"
    return ""


def _number_text(value) -> str:
    """A number as a message shows it: short, even for an integer of thousands of digits."""
    try:
        return f"{float(value):.3g}"
    except OverflowError:
        return f"{str(value)[:12]}... ({len(str(value))} digits)"


def run_minutes_of(metrics: dict) -> Optional[float]:
    try:
        if metrics.get("total_seconds") is not None:
            seconds = float(metrics["total_seconds"])
        elif metrics.get("train_seconds") is not None or metrics.get("predict_seconds") is not None:
            seconds = float(metrics.get("train_seconds") or 0) + float(metrics.get("predict_seconds") or 0)
        else:
            return None
    except (TypeError, ValueError):
        return None
    return round(seconds / 60.0, 2)


def train_minutes_of(metrics: dict) -> Optional[float]:
    """The training's minutes metrics.json says (train_seconds); None when it says none."""
    seconds = finite_number(metrics.get("train_seconds"))
    return None if seconds is None or seconds < 0 else round(seconds / 60.0, 2)


def device_of(metrics: dict) -> str:
    """The device metrics.json names, as one printable line of at most 80 characters ("" when it names none)."""
    text = " ".join(str(metrics.get("device") or "").split())
    return "".join(ch for ch in text if ch.isprintable())[:80]


def val_rows_of(metrics: dict) -> Optional[int]:
    """The validation slice's rows metrics.json says; None unless a positive whole number."""
    rows = finite_number(metrics.get("val_rows"))
    return int(rows) if rows is not None and rows >= 1 and rows == int(rows) else None


def rows_expected_of(metrics: Optional[dict]) -> int:
    """The test rows a run's submission must hold: metrics.json's test_rows, else the competition's 8000."""
    with contextlib.suppress(TypeError, ValueError):
        if metrics and int(metrics.get("test_rows") or 0) > 0:
            return int(metrics["test_rows"])
    return DEFAULT_TEST_ROWS


def metrics_columns(metrics: dict) -> dict:
    """The ledger cells metrics.json fills (pull and sync write them): those it says, each as the ledger keeps it."""
    fields = {"val_accuracy": finite_number(metrics.get("val_accuracy")), "run_minutes": run_minutes_of(metrics),
              "run_config_hash": str(metrics.get("config_hash") or ""),
              "trainable_params": metrics.get("trainable_params"), "val_rows": val_rows_of(metrics),
              "train_minutes": train_minutes_of(metrics), "device": device_of(metrics)}
    return cells({k: v for k, v in fields.items() if v not in (None, "")})


def submission_description(kernel: KernelRef, version: int, config_hash: str, token: str, text: str) -> str:
    """``v<N> owner/slug`` first (scores match submissions to versions by it), then the hash and the token,
    then the message."""
    head = f"v{version} {kernel}" + (f" {config_hash[:12]}" if config_hash else "") + f" {token}"
    return (head + (f": {text}" if text else ""))[:1000]


def description_version(description: str) -> tuple:
    """(version, kernel text or "") a submission's description names; (None, "") when it names none. Older
    descriptions name only the version: theirs is the metadata's kernel."""
    match = _DESCRIPTION_VERSION.match(description or "")
    return (int(match.group(1)), match.group(2) or "") if match else (None, "")


PREDICTED_ON = {"smoke": "synthetic smoke data", "competition": "the competition's test file"}


def predicted_on(project: Project, version: int, row: dict, kernel: Optional[KernelRef] = None) -> tuple:
    """What v<N>'s run predicted on, as its pulled metrics.json says (predicted_on_of)."""
    try:
        metrics = metrics_read(project.version_dir(version, kernel)) or {}
    except UsageError:
        metrics = {}
    return predicted_on_of(metrics, row)


def predicted_on_of(metrics: dict, row: dict) -> tuple:
    """(kind, words) from metrics.json's predicted_on; for a run from before it was recorded, ("smoke", ...)
    when its config or the ledger row's overrides say smoke=true, else (None, why)."""
    seen = metrics.get("predicted_on")
    if isinstance(seen, dict) and seen.get("kind"):
        kind = str(seen["kind"])
        where = "" if kind == "smoke" or not seen.get("path") else f" {seen['path']}"
        return kind, PREDICTED_ON.get(kind, "another test file") + where
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    if config.get("smoke") is True or (overrides_of(row) or {}).get("smoke") is True:
        return "smoke", PREDICTED_ON["smoke"] + " (smoke=true)"
    return None, "its metrics.json does not say (written before lorakit recorded it)"


def submission_columns(sub: Submission) -> dict:
    """The ledger's cells of a submission as Kaggle shows it (every command that records one writes these)."""
    return cells({"submission_ref": sub.ref, "submission_status": sub.status, "public_score": sub.public_score,
                  "private_score": sub.private_score})


def submission_key(sub: Submission, rows: dict, home: str) -> Optional[tuple]:
    """The (kernel, version) a submission belongs to: by its recorded ref, by a token in its description,
    else by the version (and kernel) its description names."""
    for key, row in rows.items():
        tokens = [t for t in (row.get("submission_token"), row.get("pending_token")) if t]
        if row.get("submission_ref") == str(sub.ref) or any(t in sub.description for t in tokens):
            return key
    version, kernel = description_version(sub.description)
    if version is None:
        return None
    kernel = kernel or home
    return next((k for k in rows if k[1] == version and kernel_same(k[0], kernel)), (kernel, version))


def submission_preferred(row: dict, sub: Submission, current: Optional[Submission]) -> bool:
    """Whether ``sub`` is the version's submission rather than ``current``: the pending one once it shows
    up, else the recorded one (by ref, else token), else the newest."""
    pending = row.get("pending_token")
    if pending and pending in sub.description:
        return True
    if pending and current is not None and pending in current.description:
        return False
    if row.get("submission_ref"):
        return str(sub.ref) == row["submission_ref"]
    if row.get("submission_token"):
        return row["submission_token"] in sub.description
    return current is None or sub.ref > current.ref


def output_path_check(path, flag: str, folder: bool = False) -> Path:
    """``path`` when ``flag`` PATH can be written (a file, or with ``folder`` a folder to create or fill);
    else ArgumentError naming it. Called before any network call, so that nothing is fetched in vain."""
    path = Path(path)
    target = path if folder else path.parent
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    problem = ""
    if path.exists() and path.is_dir() != folder:
        problem = "is a folder" if path.is_dir() else "is not a folder"
    elif not existing.is_dir():
        problem = f"{existing} is not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            problem = f"{existing} is not writable ({exc.strerror or type(exc).__name__})"
    if problem:
        raise ArgumentError(f"{flag} {path}: {problem}")
    return path
