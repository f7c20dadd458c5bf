"""Errors a user can fix: printed as one line, with no traceback, by the entry points."""

import contextlib
import sys


class UserError(Exception):
    """A mistake in the input or the set-up: the message names the file, line or key and the fix."""


@contextlib.contextmanager
def reported():
    """For an entry point's body: a UserError becomes ``error: <message>`` on stderr and exit code 2."""
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
