"""Errors a user can fix: printed as one line, with no traceback, by the entry points."""

import contextlib
import sys


class UserError(Exception):
    """A mistake in the input or the set-up: the message names the file, line or key and the fix."""


@contextlib.contextmanager
def reported(interrupted: str | None = None):
    """For an entry point's body: a UserError becomes ``error: <message>`` on stderr and exit code 2.
    With ``interrupted`` (what was kept and how to continue), Ctrl-C becomes ``interrupted: <that>``
    and exit code 130 instead of a traceback (run and pretrain, which resume)."""
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"interrupted: {interrupted}", file=sys.stderr)
        sys.exit(130)
