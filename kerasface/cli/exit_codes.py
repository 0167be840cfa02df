"""The exit statuses of the ``kerasface`` command, in one place (also listed in ``kerasface --help``)."""

from __future__ import annotations

__all__ = ["BAD_INPUT", "COLLAPSED", "DIFFERENT_PEOPLE", "EXIT_CODES", "FAILURE", "INTERRUPTED", "NON_FINITE_LOSS",
           "OK", "epilog"]

OK = 0
#: an unexpected error (one line with its type; --verbose prints the traceback), or a run that stopped
#: for another reason
FAILURE = 1
#: ``kerasface verify``: the two photos show different people (0: the same person), for scripts
DIFFERENT_PEOPLE = 1
#: bad command line or input: unknown preset or flag value, missing data, unwritable folder, ...
BAD_INPUT = 2
#: training stopped on a NaN/inf loss; the run folder keeps the last good epoch
NON_FINITE_LOSS = 3
#: triplet training stopped because the embeddings collapsed (--collapse-floor); the run folder is kept
COLLAPSED = 4
#: interrupted (Ctrl-C); run the same command again to resume
INTERRUPTED = 130

EXIT_CODES = {
    OK: "success",
    FAILURE: "failure (an unexpected error: one line with its type; --verbose prints the traceback); "
             "`kerasface verify`: different people",
    BAD_INPUT: "bad command line or input (unknown preset, missing data, unwritable folder, ...)",
    NON_FINITE_LOSS: "training stopped on a NaN/inf loss (the run folder keeps the last good epoch)",
    COLLAPSED: "triplet training stopped: the embeddings collapsed (--collapse-floor)",
    INTERRUPTED: "interrupted (Ctrl-C); the same command resumes",
}


def epilog() -> str:
    """The exit-status table of ``kerasface --help``."""
    return "exit status:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())
