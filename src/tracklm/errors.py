"""Errors that reach the user as one line and exit status 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad usage or bad input.

    The message is one line that names the file, row, column or option at fault. The command
    line prints it on stderr and exits with status 2 (a traceback only with ``--debug``).
    """
