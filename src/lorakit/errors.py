"""Exceptions raised by the lorakit library. The CLI prints their message as one line on stderr and exits with the
exception's exit_code; every command follows the one rule EXIT_CODES states (docs/cli.md prints it):

- ArgumentError (2): the command line is wrong: a value that cannot be used, flags that contradict each other.
- Refused (6): nothing was sent, because it would spend something scarce by mistake or Kaggle would refuse it;
  the message names the fix, or the flag that overrides it (FlagNeeded).
- NotFound (7): the version, sweep or file named does not exist (in the ledger, in submissions/, on disk, or
  on Kaggle: a 404); the message names what does.
- any other LorakitError (1): something failed: an offline check (config rules, budget, an invalid file),
  Kaggle's answer, the network, a file that cannot be read or written.
"""


class LorakitError(Exception):
    """A user-facing failure. ``str(exc)`` is the message shown to the user."""

    exit_code = 1


class UsageError(LorakitError):
    """Bad input, or an offline check that failed (metadata, config, budget, CSV)."""


class ArgumentError(UsageError):
    """A command-line argument that cannot be used, found before anything is done (an unwritable --plot PATH)."""

    exit_code = 2


class Refused(UsageError):
    """Nothing was sent: it would spend something scarce by mistake, or Kaggle would refuse it."""

    exit_code = 6


class FlagNeeded(Refused):
    """What was asked would spend something scarce by mistake (a GPU run again, a submission of a smoke run):
    it needs an explicit flag, which the message names."""


class NotFound(UsageError):
    """The version, sweep or file named does not exist; the message names those that do."""

    exit_code = 7


class LedgerError(LorakitError):
    """The ledger is missing where it is needed, unreadable or corrupted."""


class RemoteError(LorakitError):
    """A Kaggle API call failed; the message carries advice for the status code, ``detail`` Kaggle's own words."""

    def __init__(self, message, status=None, detail=""):
        super().__init__(message)
        self.status = status
        self.detail = detail  # the first line of what Kaggle answered (an HTTP error's message), if any

    @property
    def exit_code(self) -> int:
        return NotFound.exit_code if self.status == 404 else LorakitError.exit_code


class KaggleRefused(RemoteError):
    """Kaggle refused a push or a submission it was sent, for a reason lorakit knows (lorakit.preflight's
    KNOWN_REFUSALS): nothing was created, and the message names the fix. ``kind`` names the refusal, ``limit``
    the number Kaggle quoted (the GPU sessions it allows at once)."""

    def __init__(self, message, status=None, kind="", limit=None):
        super().__init__(message, status)
        self.kind = kind
        self.limit = limit


class RunFailed(LorakitError):
    """A kernel run or a submission ended in ERROR (or was cancelled)."""

    exit_code = 3


class Timeout(LorakitError):
    """Waiting for a run or a submission passed its deadline."""

    exit_code = 4


class Unconfirmed(LorakitError):
    """A push or a submission may have gone through: its reply was lost and checking failed, or not found yet."""

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
    (LorakitError.exit_code, "an error: a failed offline check (config rules, budget, an invalid file), Kaggle's "
                             "answer, the network, a file that cannot be read or written"),
    (ArgumentError.exit_code, "the command line is wrong: an unknown command or flag, a missing argument, a value "
                              "that cannot be used (a version that is no number, a non-positive --timeout), flags "
                              "that contradict each other, an unwritable --plot, --out or --download path"),
    (RunFailed.exit_code, RunFailed.__doc__),
    (Timeout.exit_code, Timeout.__doc__),
    (Unconfirmed.exit_code, Unconfirmed.__doc__),
    (Refused.exit_code, "refused, nothing sent: it would spend something scarce by mistake or Kaggle would refuse "
                        "it; the message names the fix, or the flag that overrides it (--again: a push of a config "
                        "whose push may have reached Kaggle, a second submission of a version; --allow-smoke: a "
                        "submission of a smoke run; --over-quota: a run longer than the GPU hours left)"),
    (NotFound.exit_code, "not found: the version, sweep or file named does not exist (in the ledger, in "
                         "submissions/, on disk, or on Kaggle); the message names what does"),
    (70, "an internal error (a bug): one line; LORAKIT_DEBUG=1 shows the traceback"),
    (Interrupted.exit_code, Interrupted.__doc__),
    (141, "stdout was closed before the output ended (lorakit plan piped to head -1): stopped quietly"),
)
