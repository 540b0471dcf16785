"""The one error type users see: a bad input, reported as one line with exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config, corpus, CLI arguments).

    The CLI prints ``error: <message>`` on one line and exits with code 2; nothing is half written.
    """

    exit_code = 2
