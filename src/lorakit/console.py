"""What every command's presentation shares: where it writes (:class:`Output`: the result on stdout, or one
JSON document under --json), the one-line messages, tables and figures, the project and the Kaggle
connection a command works on, and the registry each command module adds its handler and flags to.

Everything printed goes through here, and through :func:`printable` on its way: text from the ledger, a pulled
folder or Kaggle (a message, a failure, a log) never reaches the terminal with its control characters (an
escape sequence could rewrite the screen, a carriage return hide a line). The JSON document needs none of
that: json.dumps writes every control character as an escape.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Callable, Optional

from lorakit.errors import ArgumentError
from lorakit.processes import leftovers_remove
from lorakit.project import project_load
from lorakit.remote import Remote

_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_]?)")  # CSI, OSC, the others
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1


def printable(text, one_line: bool = False) -> str:
    """``text`` safe for a terminal: escape sequences dropped, a carriage return made a line end, any other
    control character shown as "?"; with ``one_line`` (a table cell) line ends and tabs are spaces."""
    text = _ESCAPE.sub("", str(text)).replace("\r\n", "\n").replace("\r", "\n")
    if one_line:
        text = text.replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub("?", text)


class Output:
    """Where a command writes: its result as text on stdout; with --json one JSON document on stdout instead,
    and every progress line on stderr. ``partial`` collects what a command has done so far: a command that
    fails under --json still prints one document, that and the error."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.documented = False
        self.partial: dict = {}

    def result(self, text: str = "") -> None:
        """Part of the result: stdout, or nothing under --json (the document holds it)."""
        if not self.as_json:
            print(printable(text), file=sys.stdout)

    def progress(self, text: str, end: str = "\n") -> None:
        """Progress and hints: stdout, or stderr under --json; flushed, so a follower sees it at once."""
        print(printable(text), end=end, file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def text(self, text: str) -> None:
        """A result that is a document of its own (CSV, a log): stdout as it is but for control characters;
        nothing under --json (the JSON document holds it)."""
        if not self.as_json:
            sys.stdout.write(printable(text))

    def document(self, data: dict) -> None:
        if self.as_json and not self.documented:
            print(json.dumps(data, sort_keys=True), file=sys.stdout)
            self.documented = True

    def failure(self, message: str, exit_code: int) -> None:
        self.document({**self.partial, "error": message, "exit_code": exit_code})


def err(text: str) -> None:
    print(printable(text), file=sys.stderr)


def warn(text: str) -> None:
    err(f"lorakit: warning: {text}")


def note(text: str) -> None:
    err(f"lorakit: note: {text}")


def table(headers: list, rows: list) -> str:
    cells = [[("" if c is None else printable(c, one_line=True)) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def fmt(value, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def plural(count: int, word: str, many: str = "") -> str:
    """"1 row", "2 rows" ("1 arm", "3 arms"): ``many`` for a word that takes no -s."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def value_text(value) -> str:
    """A config value as --set spells it (booleans true/false)."""
    return "true" if value is True else "false" if value is False else str(value)


def changes_text(changes: dict, value_width: Optional[int] = None) -> str:
    """key=value pairs, space-separated: what a version changed, compactly (each value shortened to
    ``value_width`` characters when given: a path or an adapter's sha256 needs no more in a table)."""
    return " ".join(f"{key}={shorten(value_text(value), value_width)}" for key, value in changes.items())


def shorten(text: str, width: Optional[int]) -> str:
    """``text`` within ``width`` characters, cut in the middle ("kernel/ag...ra/adapter"): the start and the end
    of a path or a message tell most; None: whole."""
    if width is None or len(text) <= width:
        return text
    keep = max(2, width - 3)
    return text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2:]


def project_of(args):
    """The project a command works on: --repo, --kernel and --competition applied. The temporary files that
    killed commands left in its submissions folder (and lorakit's in the system's temp folder) go first."""
    project = project_load(args.repo, kernel=args.kernel, competition=args.competition)
    leftovers_remove([project.submissions_dir, project.submissions_dir / "sweeps"])
    return project


def remote_new() -> Remote:
    """A Kaggle connection (the kaggle client is imported on its first call)."""
    return Remote()


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def one_format(args) -> None:
    if args.csv and args.json:
        raise ArgumentError("choose one of --csv and --json")


def seconds_check(value: float, name: str) -> None:
    """Every --timeout: a positive number of seconds, and a finite one (no wait is unbounded)."""
    if not value > 0:
        raise ArgumentError(f"{name} must be a positive number of seconds")
    if not math.isfinite(value):
        raise ArgumentError(f"{name} must be a finite number of seconds (no wait is unbounded), got {value:g}")


REGISTRY: dict = {}  # name -> (name, help, flags, handler); lorakit.cli.COMMANDS orders them


def flag(*names, **options) -> tuple:
    """One argparse argument: ``flag("--top", type=int, help=...)``."""
    return names, options


def command(name: str, help_text: str, *flags: tuple):
    """Register ``cmd_x`` as the command ``name`` with its flags (each from :func:`flag`)."""

    def register(handler: Callable) -> Callable:
        REGISTRY[name] = (name, help_text, flags, handler)
        return handler

    return register


CSV = flag("--csv", action="store_true", help="print CSV (pandas.read_csv reads it) instead of a table")
JSON = flag("--json", action="store_true", help="print one JSON document on stdout; messages go to stderr")
SETS = flag("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
            help="override one config key of the kernel (repeatable; booleans are true/false)")
ALLOW_SMOKE = flag("--allow-smoke", action="store_true",
                   help="submit even a run that did not predict the competition's own file (a smoke run, another "
                        "test file): for exercising the loop against a stand-in")
