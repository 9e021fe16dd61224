"""How two submissions' test predictions agree (`lorakit compare`'s test-set part): overall, per class, their
class shares, and the confidence of each side on the rows where they differ (probabilities.csv). A submission
CSV is untrusted input: a malformed one is one line naming the file and the line."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorakit.common import LABELS
from lorakit.console import Output, plural, table
from lorakit.errors import NotFound, UsageError


def _read_labels(path: Path) -> dict:
    """ID -> label of a submission CSV (ID,Label, labels 0-3, each ID once); UsageError naming the line."""
    if not path.is_file():
        raise NotFound(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    out: dict = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's BOM is fine
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "ID" not in reader.fieldnames or "Label" not in reader.fieldnames:
                raise UsageError(f"{path} must have the columns ID,Label")
            for row in reader:
                line = reader.line_num
                try:
                    key, label = int(row["ID"]), int(row["Label"])
                except (TypeError, ValueError):
                    raise UsageError(f"{path}: line {line} is not integer ID,Label")
                if not 0 <= label < len(LABELS):
                    raise UsageError(f"{path}: line {line} has Label {label}; labels are 0-{len(LABELS) - 1}")
                if key in out:
                    raise UsageError(f"{path}: line {line} repeats ID {key}")
                out[key] = label
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a readable CSV ({type(exc).__name__})")
    if not out:
        raise UsageError(f"{path} has no rows")
    return out


def read_confidence(path: Path) -> Optional[dict]:
    """ID -> (top class, its probability) of a probabilities.csv (ID, then one column per class, as the kernel
    writes it); None when absent or not readable as one."""
    if not path.is_file():
        return None
    out = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            cols = [c for c in (reader.fieldnames or []) if c != "ID"]
            if "ID" not in (reader.fieldnames or []) or not cols:
                return None
            for row in reader:
                values = [float(row[c]) for c in cols]
                out[int(row["ID"])] = max(enumerate(values), key=lambda item: item[1])
    except (TypeError, ValueError, UnicodeDecodeError, csv.Error):
        return None
    return out


def confidence_of(path: Path, labels: Optional[dict]) -> Optional[dict]:
    """ID -> top class probability of the probabilities.csv at ``path``; with ``labels`` (a submission's), only
    when it is that submission's own: the same IDs, its top class the label on 99% of them at least (a tie may
    round either way). None otherwise."""
    read = read_confidence(path)
    if read is None:
        return None
    if labels is not None and (set(read) != set(labels) or
                               sum(read[i][0] == k for i, k in labels.items()) < 0.99 * len(labels)):
        return None
    return {i: p for i, (_top, p) in read.items()}


@dataclass(frozen=True)
class Agreement:
    """How two submissions' test predictions agree."""

    rows: int
    agreement: float
    per_class: dict  # label -> (rows A predicts it, agreement of B on them, rows B predicts it, agreement of A)
    distribution_a: dict
    distribution_b: dict
    disagreements: int
    confidence_a: Optional[float]  # mean top probability on the disagreements (probabilities.csv)
    confidence_b: Optional[float]

    def as_json(self) -> dict:
        per_class = {
            name: {"a_rows": na, "b_agrees": agree_b, "b_rows": nb, "a_agrees": agree_a}
            for name, (na, agree_b, nb, agree_a) in self.per_class.items()
        }
        return {**dataclasses.asdict(self), "per_class": per_class}


def agreement_of(a, b) -> Agreement:
    """The test-set agreement of two sides' submissions (each a compare.Side: its name, submission and
    confidence(labels)); UsageError when a file is unusable or the IDs differ."""
    la, lb = _read_labels(a.submission), _read_labels(b.submission)
    if set(la) != set(lb):
        raise UsageError(f"{a.name} and {b.name} cover different IDs ({len(la)} and {len(lb)} rows)")
    ids = sorted(la)
    agree = sum(la[i] == lb[i] for i in ids)
    per_class = {}
    for k, name in enumerate(LABELS):
        rows_a = [i for i in ids if la[i] == k]
        rows_b = [i for i in ids if lb[i] == k]
        per_class[name] = (
            len(rows_a),
            sum(lb[i] == k for i in rows_a) / len(rows_a) if rows_a else None,
            len(rows_b),
            sum(la[i] == k for i in rows_b) / len(rows_b) if rows_b else None,
        )
    dist_a = {name: sum(1 for i in ids if la[i] == k) for k, name in enumerate(LABELS)}
    dist_b = {name: sum(1 for i in ids if lb[i] == k) for k, name in enumerate(LABELS)}
    differ = [i for i in ids if la[i] != lb[i]]
    ca, cb = a.confidence(la), b.confidence(lb)
    conf_a = conf_b = None
    if ca is not None and cb is not None and differ:
        conf_a = sum(ca.get(i, 0.0) for i in differ) / len(differ)
        conf_b = sum(cb.get(i, 0.0) for i in differ) / len(differ)
    return Agreement(len(ids), agree / len(ids), per_class, dist_a, dist_b, len(differ), conf_a, conf_b)



# ------------------------------------------------------------------------------------- the command line
def agreement_show(out: Output, c) -> None:
    """How the two sides' test predictions agree (overall, per class, class shares, confidence)."""
    t = c.test
    if t is None:
        out.result(f"test set: not compared: {c.test_reason}")
        return
    a = c.a.name if c.a.run is not None else "A"  # a file's path is too long for the table's headers
    b = c.b.name if c.b.run is not None else "B"
    title_a, title_b = (side.name + ("" if side.name == short else f" ({short})")
                        for side, short in ((c.a, a), (c.b, b)))
    out.result(f"test set: {title_a} vs {title_b}: {plural(t.rows, 'row')}, agreement {t.agreement:.2%} "
               f"({plural(t.disagreements, 'row')} {'differs' if t.disagreements == 1 else 'differ'})")
    rows = [
        [name, na, "-" if agree_b is None else f"{agree_b:.2%}", nb, "-" if agree_a is None else f"{agree_a:.2%}",
         f"{t.distribution_a[name] / t.rows:.1%}", f"{t.distribution_b[name] / t.rows:.1%}"]
        for name, (na, agree_b, nb, agree_a) in t.per_class.items()
    ]
    out.result(table(["class", f"{a} rows", f"{b} agrees", f"{b} rows", f"{a} agrees", f"{a} share", f"{b} share"],
                      rows))
    if t.confidence_a is not None:
        out.result(f"mean confidence on the {t.disagreements} disagreements: {a} {t.confidence_a:.3f}, "
                   f"{b} {t.confidence_b:.3f}")
    elif t.disagreements:
        out.result("(confidence on the disagreements needs each side's own probabilities.csv beside its submission)")
