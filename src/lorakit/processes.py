"""Processes: who is sending (this process named by host, pid and start time), whether a sender named so is
still alive, and the temporary files a killed lorakit command left behind.

A sender is named ``host pid start``: ``start`` is the process's start time (Linux: the boot's id and the
start in clock ticks, from /proc), so that a pid the system gave to another process since is not taken for
it. Where the start time cannot be read (another system) or the sender is on another machine (a ledger shared
through git), whether it is alive cannot be told: the caller then waits for the longest its send can take.

Every temporary file or folder lorakit makes carries ``pid<N>-`` in its name (temp_tag); leftovers_remove
deletes those whose process has died, so a command killed half way leaves nothing behind for long.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterable, Optional

_SENDER = re.compile(r"^([A-Za-z0-9._-]{1,253}) (\d{1,10}) ([0-9a-f]{8}\.\d{1,20}|-)$")
_TAGGED = re.compile(r"^(?:\.|lorakit-).*?pid(\d{1,10})-")  # a temporary name temp_tag marked
TEMP_KINDS = ("lorakit-build-", "lorakit-sync-")  # the temporary folders lorakit makes in the system's temp folder

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"


def host_name() -> str:
    """This machine's name as a sender names it (letters, digits, '.', '_' and '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname() or "localhost")[:253] or "localhost"


def _start_of(pid: int) -> Optional[str]:
    """When process ``pid`` started, as ``<boot id>.<clock ticks>``; None where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip().replace("-", "")[:8]
        stat = Path(f"/proc/{int(pid)}/stat").read_text(encoding="ascii", errors="replace")
        ticks = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name's parenthesis
    except (OSError, IndexError, ValueError):
        return None
    return f"{boot}.{ticks}" if re.fullmatch(r"[0-9a-f]{8}", boot) and ticks.isdigit() else None


def sender_name() -> str:
    """This process, as a ledger row names its sender: ``host pid start`` (start "-" where unknown)."""
    return f"{host_name()} {os.getpid()} {_start_of(os.getpid()) or '-'}"


def sender_parse(text: str) -> Optional[tuple]:
    """(host, pid, start) of a sender cell; None for a cell that names none (an older ledger, a hand edit)."""
    match = _SENDER.match(str(text or "").strip())
    return (match.group(1), int(match.group(2)), match.group(3)) if match else None


def sender_state(text: str) -> str:
    """ALIVE or DEAD when this machine can tell (a sender here, its start time readable), else UNKNOWN."""
    parsed = sender_parse(text)
    if parsed is None or parsed[0] != host_name() or parsed[2] == "-":
        return UNKNOWN
    start = _start_of(parsed[1])
    if start is None and _start_of(os.getpid()) is None:  # /proc unreadable here after all
        return UNKNOWN
    return ALIVE if start == parsed[2] else DEAD


def sender_is_me(text: str) -> bool:
    """Whether a sender cell names this very process."""
    return sender_parse(text) is not None and sender_parse(text)[:2] == (host_name(), os.getpid())


def sender_words(text: str) -> str:
    """"process 1234" (on this machine) or "process 1234 on host": who sends, for a message."""
    parsed = sender_parse(text)
    if parsed is None:
        return "an unknown process"
    return f"process {parsed[1]}" + ("" if parsed[0] == host_name() else f" on {parsed[0]}")


# ------------------------------------------------------------------------------------- temporary files
def temp_tag() -> str:
    """What every temporary name of this process carries, so the next command knows whose it was."""
    return f"pid{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine; True when that cannot be told (nothing is removed)."""
    if pid == os.getpid():
        return True
    if Path("/proc/self").is_dir():
        return Path(f"/proc/{pid}").exists()
    if os.name != "posix":  # os.kill(pid, 0) would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def leftovers_remove(folders: Iterable[Path]) -> list:
    """Remove from ``folders`` (and lorakit's folders in the system's temp folder) the temporary files and
    folders of lorakit commands that have died; the paths removed. Another command's, still running, stay."""
    removed = []
    for folder, prefixes in [*((Path(f), (".",)) for f in folders), (Path(tempfile.gettempdir()), TEMP_KINDS)]:
        with contextlib.suppress(OSError):
            for path in folder.iterdir():
                match = _TAGGED.match(path.name)
                if match is None or not path.name.startswith(prefixes) or pid_alive(int(match.group(1))):
                    continue
                if hasattr(os, "getuid") and path.lstat().st_uid != os.getuid():
                    continue  # another user's (the system's temp folder is shared)
                _remove(path)
                removed.append(path)
    return removed


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
