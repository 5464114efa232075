"""The one exception family of the package.

Library code raises these with a message meant for the user; only the CLI turns them into
exit codes (2 for bad usage or input, 1 for failures at run time).
"""

from __future__ import annotations


class NmtError(Exception):
    """A failure with a one-line message for the user (exit code 1)."""

    exit_code = 1


class InputError(NmtError):
    """Bad usage or bad input: a file, line or config key the user can fix (exit code 2)."""

    exit_code = 2
