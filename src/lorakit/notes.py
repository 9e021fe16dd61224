"""`lorakit note` and `lorakit tag`: what you learnt about a version after the fact ("bugged: the lr was wrong",
"final"), kept in its ledger row: offline, shown by `versions`, `compare` and `report`, and kept by `sync`
(the ledger is the committed record, so a second clone has them once it has the ledger).
"""

from __future__ import annotations

import re

from lorakit.common import ledger_of, text_checked, version_parse
from lorakit.console import JSON, command, flag, project_of
from lorakit.errors import ArgumentError, NotFound
from lorakit.ledger import Ledger
from lorakit.project import Project

NOTE_MAX = 500  # characters of a note: a sentence or two, one line in the table
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # one word: final, bugged, lr-too-high, ...


def row_of(project: Project, version) -> tuple[Ledger, int, dict]:
    """(the ledger, the version, its row); NotFound naming the versions the ledger knows."""
    ledger = ledger_of(project)
    number = version_parse(version)
    rows = ledger.rows()
    row = next((r for r in rows if int(r["version"]) == number), None)
    if row is None:
        known = ", ".join(f"v{r['version']}" for r in rows) or "none yet (lorakit push records them)"
        raise NotFound(f"v{number} is not in the ledger of {project.kernel}: it knows {known}")
    return ledger, number, row


def tags_of(row: dict) -> list:
    """The tags a ledger row holds, in the order they were added."""
    return [t for t in (row.get("tags") or "").split(",") if t]


def notes_text(row: dict) -> str:
    """A row's tags and note as one short text: "#final #bugged lr was 10x too high"."""
    return " ".join([*(f"#{t}" for t in tags_of(row)), " ".join((row.get("note") or "").split())])


def note_set(project: Project, version, text: str) -> tuple[int, str, str]:
    """Set v<N>'s note to ``text`` (one line; "" removes it); (version, the note before, the note now)."""
    text = " ".join(text_checked(text, "the note").split())
    if len(text) > NOTE_MAX:
        raise ArgumentError(f"a note holds at most {NOTE_MAX} characters, this one {len(text)}: shorten it")
    ledger, number, row = row_of(project, version)
    ledger.update(number, note=text)
    return number, row.get("note") or "", text


def tags_change(project: Project, version, added: list, removed: list) -> tuple[int, list]:
    """Add ``added`` and remove ``removed`` from v<N>'s tags; (version, its tags now)."""
    for tag in (*added, *removed):
        if not TAG.fullmatch(tag):
            raise ArgumentError(f"a tag is one word of letters, digits, '-', '_' or '.' (at most 32), got {tag!r}")
    ledger, number, row = row_of(project, version)
    tags = [t for t in dict.fromkeys([*tags_of(row), *added]) if t not in removed]
    if tags != tags_of(row):
        ledger.update(number, tags=",".join(tags))
    return number, tags


# ------------------------------------------------------------------------------------- the command line
@command(
    "note",
    "write your note on a version into its ledger row (shown by versions, compare and report; kept by sync)",
    flag("version", help="kernel version number"),
    flag("text", nargs="?", help="the note, in quotes (replaces the one before); without it, the note is shown"),
    flag("--clear", action="store_true", help="remove the version's note"),
    JSON,
)
def cmd_note(args) -> int:
    out = args.out
    project = project_of(args)
    if args.clear and args.text is not None:
        raise ArgumentError("give a note or --clear, not both")
    if args.text is None and not args.clear:
        _ledger, number, row = row_of(project, args.version)
        out.document({"version": number, "note": row.get("note") or ""})
        out.result(f"v{number}: {row.get('note') or '(no note)'}")
        return 0
    if args.text is not None and not args.text.strip():
        raise ArgumentError("the note is empty: to remove a note, use --clear")
    number, before, now = note_set(project, args.version, "" if args.clear else args.text)
    out.document({"version": number, "note": now, "replaced": before or None})
    out.result(f"v{number}: {now}" if now else f"v{number}: note removed")
    if before and before != now:
        out.progress(f"(the note before: {before})")
    return 0


@command(
    "tag",
    "tag a version (final, bugged, ...): tags go into its ledger row, versions --where tags=final finds them",
    flag("version", help="kernel version number"),
    flag("tags", nargs="*", metavar="TAG", help="tags to add, one word each; without any (and without --remove), "
                                                "the version's tags are shown"),
    flag("--remove", nargs="+", default=[], metavar="TAG", help="tags to remove"),
    JSON,
)
def cmd_tag(args) -> int:
    out = args.out
    project = project_of(args)
    number, tags = tags_change(project, args.version, args.tags, args.remove)
    out.document({"version": number, "tags": tags})
    out.result(f"v{number}: " + (" ".join(f"#{t}" for t in tags) or "(no tags)"))
    return 0
