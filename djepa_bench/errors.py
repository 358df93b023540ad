"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment that they can fix.

    The message must be a single line that says what was wrong and how to fix it.
    """
