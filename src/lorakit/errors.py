"""Exceptions raised by the lorakit library. The CLI prints their message as one line on stderr."""


class LorakitError(Exception):
    """A user-facing failure. ``str(exc)`` is the message shown to the user."""

    exit_code = 1


class UsageError(LorakitError):
    """Bad input, or an offline check that failed (metadata, config, budget, CSV)."""


class FlagNeeded(UsageError):
    """What was asked would spend something scarce by mistake (a GPU run again, a submission of a smoke run):
    it needs an explicit flag, which the message names."""

    exit_code = 2


class ArgumentError(UsageError):
    """A command-line argument that cannot be used, found before anything is done (an unwritable --plot PATH)."""

    exit_code = 2


class LedgerError(LorakitError):
    """The ledger is missing where it is needed, unreadable or corrupted."""


class RemoteError(LorakitError):
    """A Kaggle API call failed; the message carries advice for the status code."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class RunFailed(LorakitError):
    """A kernel run or a submission ended in ERROR (or was cancelled)."""

    exit_code = 3


class Timeout(LorakitError):
    """Waiting for a run or a submission passed its deadline."""

    exit_code = 4


class Unconfirmed(LorakitError):
    """A push or a submission was sent, its reply was lost and checking failed: it may have gone through."""

    exit_code = 5


class Interrupted(LorakitError):
    """Ctrl-C: the ledger is consistent; the message says how to resume."""

    exit_code = 130

    def __init__(self, message, version=None):
        super().__init__(message)
        self.version = version  # the version the ledger recorded before the interruption, if any


# Every exit status of `lorakit`, for `lorakit --help` and docs/cli.md.
EXIT_CODES = (
    (0, "done"),
    (LorakitError.exit_code, "an error: bad input, a failed offline check, Kaggle refused or could not be reached"),
    (2, "the command line itself is wrong (an unknown command or flag, a missing argument, an unwritable "
        "--plot or --download path), or it needs an explicit flag: a push that would spend a GPU run again "
        "(--again), a submission of a smoke run (--allow-smoke)"),
    (RunFailed.exit_code, RunFailed.__doc__),
    (Timeout.exit_code, Timeout.__doc__),
    (Unconfirmed.exit_code, Unconfirmed.__doc__),
    (70, "an internal error (a bug): one line; LORAKIT_DEBUG=1 shows the traceback"),
    (Interrupted.exit_code, Interrupted.__doc__),
    (141, "stdout was closed before the output ended (lorakit plan piped to head -1): stopped quietly"),
)
