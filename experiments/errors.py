"""Errors a user can fix: printed as one line, with no traceback, by the entry points."""


class UserError(Exception):
    """A mistake in the input or the set-up: the message names the file, line or key and the fix."""
