"""The `lorakit` command line: it parses and dispatches, nothing more.

Each command lives in the module of its family (``lorakit.push``, ``lorakit.follow``, ...): its library
functions, which raise LorakitError, and its handler with its flags and presentation beside them, registered
with :func:`lorakit.console.command`. :data:`COMMANDS` names the module of each, in the order ``lorakit --help``
lists them. Adding a command: its module (or a handler in an existing one), one line in COMMANDS, one test
file, then ``python docs/generate.py``; docs/contributing.md has the steps.

Results go to stdout, progress and warnings to stderr; with ``--json`` stdout holds exactly one JSON document
(also when the command fails) and every other line goes to stderr. A user error prints one line on stderr
(``lorakit: error: ...``) and exits non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from typing import Optional

from lorakit import __version__
from lorakit.console import REGISTRY, Output, err
from lorakit.errors import Interrupted, LorakitError

# Every command, in the order `lorakit --help` lists them, and the module that defines it.
COMMANDS = (
    ("check", "check"), ("push", "push"), ("status", "follow"), ("logs", "follow"), ("pull", "pull"),
    ("submit", "submit"), ("scores", "scores"), ("versions", "versions"), ("note", "notes"), ("tag", "notes"),
    ("leaderboard", "scores"),
    ("compare", "compare"), ("sync", "sync"), ("quota", "quota"), ("report", "report"), ("validate", "submit"),
    ("plan", "planner"), ("run", "run"), ("sweep", "sweep"),
)

LOOP = """\
typical loop:
  lorakit check --set lora_r=8               offline: exact trainable count and budget verdict
  lorakit run -m "r=8" --set lora_r=8 --submit
                                             push, wait, pull, submit and wait for the score, in one go
or step by step:
  lorakit push -m "r=8" --set lora_r=8       render the kernel with its overrides and push a new version
  lorakit status --wait --follow             wait for the newest version, streaming its log
  lorakit pull                               download its outputs into submissions/v<N>/
  lorakit submit <N> --wait                  validate and submit submissions/v<N>/submission.csv
  lorakit scores                             my submissions and their scores, best candidates marked
then, to choose what to submit:
  lorakit versions                           every version: state, changes, val accuracy [95% CI], scores
  lorakit compare 3 5                        config and metrics diff, paired test on the same validation rows
  lorakit sweep --grid lora_r=4,8 --grid lr=5e-4,1e-3 --submit-best 1
                                             push, wait and pull each arm in turn; ranked, paired against the best
  lorakit tag 5 final                        keep what you decided in the ledger (note 5 "why" for the reason)

Commands that print data take --json: one JSON document on stdout, messages on stderr, the same exit codes.
Credentials, in the kaggle client's order: KAGGLE_API_TOKEN (a token or a file holding one),
~/.kaggle/access_token, kaggle.json (or KAGGLE_USERNAME + KAGGLE_KEY), then `kaggle auth login`'s cache.
"""


def epilog() -> str:
    """The loop, then the exit codes and environment variables from their one definition each."""
    from lorakit.errors import EXIT_CODES
    from lorakit.retry import ENVIRONMENT

    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
    env = "\n".join(f"  {var.name} ({var.default or 'unset'}): {var.meaning}" for var in ENVIRONMENT)
    return f"{LOOP}\nexit status:\n{codes}\n\nenvironment:\n{env}\n"


def commands(only: Optional[str] = None) -> list:
    """(name, help, flags, handler) of every command (or of the command ``only``) in COMMANDS' order, once their
    modules registered them."""
    chosen = [(name, module) for name, module in COMMANDS if only in (None, name)]
    for _name, module in chosen:
        importlib.import_module(f"lorakit.{module}")
    return [REGISTRY[name] for name, _module in chosen]


# ------------------------------------------------------------------------------------------------ parser
class CommandLineError(Exception):
    """What argparse found wrong with the command line; main prints it as argparse would, and as the one JSON
    document under --json."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """argparse (its subcommands too), raising CommandLineError instead of exiting on an error."""

    def error(self, message):
        raise CommandLineError(self, message)


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command ``only`` alone: a command imports only its own module
    (and what that uses), so that it starts in a fraction of the time `lorakit --help` takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", metavar="DIR", help="start the search for kernel-metadata.json here (default: cwd)")
    common.add_argument("--kernel", metavar="OWNER/SLUG", help="override the kernel id of kernel-metadata.json")
    common.add_argument("--competition", metavar="SLUG", help="override the competition (default: competition_sources[0])")

    parser = Parser(
        prog="lorakit",
        description="The local Kaggle workflow for the AG News LoRA kernel: every version a recorded experiment.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lorakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text, flags, handler in commands(only):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        for names, options in flags:
            p.add_argument(*names, **options)
        p.set_defaults(func=handler)
    return parser


@contextlib.contextmanager
def termination_as_interrupt():
    """SIGTERM and SIGHUP (a closed terminal, a dropped SSH session, `timeout`, a cancelled CI job) get
    Ctrl-C's treatment: KeyboardInterrupt where the command is, so that what it sent is recorded and the
    message says how to resume. Further ones are ignored until it has done so."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(_signum, _frame):
        for name in names:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {name: signal.signal(getattr(signal, name), interrupt) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def stdout_discard() -> None:
    """Point stdout at the null device, so that nothing more (the flush at exit included) meets the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a captured stdout): nothing to redirect
        pass


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        return _command_run(argv)
    except BrokenPipeError:  # stdout closed early (lorakit plan | head -1): stop quietly, as SIGPIPE would
        stdout_discard()
        return 141


def _command_run(argv: list) -> int:
    try:
        named = argv[0] if argv and argv[0] in dict(COMMANDS) else None  # else: --help, or a typo to list choices for
        args = build_parser(named).parse_args(argv)
    except CommandLineError as exc:
        exc.parser.print_usage(sys.stderr)
        err(f"{exc.parser.prog}: error: {exc}")
        Output("--json" in argv).failure(str(exc), 2)
        return 2
    out = args.out = Output(getattr(args, "json", False))
    with termination_as_interrupt():
        return _main_run(args, out)


def _main_run(args, out: Output) -> int:
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise
    except LorakitError as exc:
        message = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        err(f"lorakit: {'interrupted' if isinstance(exc, Interrupted) else 'error'}: {message}")
        out.failure(message, exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        err("lorakit: interrupted")
        out.failure("interrupted", 130)
        return 130
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            return _internal_error(exc, out)
        message = (f"{exc.strerror} ({exc.filename or 'writing a file'}): free some space and run the command "
                   "again; what Kaggle was already sent is in the ledger by its token and is not sent twice")
        err(f"lorakit: error: {message}")
        out.failure(message, LorakitError.exit_code)
        return LorakitError.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless debugging
        return _internal_error(exc, out)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the machine's fault, not lorakit's: said as one line


def _internal_error(exc: Exception, out: Output) -> int:
    """A bug: one line (the traceback with LORAKIT_DEBUG=1), exit 70."""
    if os.environ.get("LORAKIT_DEBUG"):
        raise exc
    first = str(exc).splitlines()[0] if str(exc) else ""
    err(f"lorakit: internal error: {type(exc).__name__}: {first} (set LORAKIT_DEBUG=1 for the traceback)")
    out.failure(f"internal error: {type(exc).__name__}: {first}", 70)
    return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
