"""What users see when something goes wrong: the one error type for bad input (one line, exit code 2), and
the masking of secrets in every text the harness shows or records."""

from __future__ import annotations

import re
from typing import Any, TextIO


class UserError(Exception):
    """Bad input from the user (config, corpus, CLI arguments).

    The CLI prints ``error: <message>`` on one line and exits with code 2; nothing is half written.
    """

    exit_code = 2


MASK = "***"
# the password runs to the last '@' before the host (a raw '@' in it stays masked)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):(?P<secret>[^\s'\"]*)@(?=[^\s@/'\"]*)")
_PARAM = re.compile(r"(?P<head>\b(?:password|passwd|pwd)=)(?P<secret>[^\s&;'\"]+)", re.IGNORECASE)


def redact(text: Any) -> Any:
    """`text` with the password of every URL in it masked (`scheme://user:***@host`, `password=***`); a
    non-string is returned as it is. Settings compared across machines hold no password (see config)."""
    if not isinstance(text, str) or ("@" not in text and "=" not in text):
        return text
    return _PARAM.sub(rf"\g<head>{MASK}", _USERINFO.sub(rf"\g<head>:{MASK}@", text))


class RedactingStream:
    """A text stream that masks passwords in whatever is written to it (stdout and stderr of the commands:
    progress lines, warnings, errors, summaries and whatever a library prints)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
