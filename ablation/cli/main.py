"""The entry point: credentials and the commit first, then one subcommand; bad input → one `error:` line,
exit code 2; an unexpected error → one line and exit code 1 (the traceback with --debug)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from ablation.cli.parser import build_parser
from ablation.config import one_line
from ablation.errors import RedactingStream, UserError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input → one `error:` line on stderr and exit code 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (RedactingStream(s) for s in streams)  # no password is ever printed
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: Sequence[str] | None) -> int:
    from ablation.io import REPO_ROOT
    from ablation.tracking.services import SERVICES_ENV, use_credentials

    use_credentials(Path(os.environ.get(SERVICES_ENV) or REPO_ROOT / ".services"))  # `make services` files
    from ablation.io import git_commit

    git_commit()  # the commit of the code this process imported, before the tree can change
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one `error:` line printed)
        return int(exc.code or 0)
    try:
        return args._commands[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except ValidationError as exc:  # a config section built from arguments
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        from ablation.runtime import INTERRUPTS

        print("interrupted", file=sys.stderr)
        return INTERRUPTS.exit_code
    except Exception as exc:  # not bad input: a bug or a broken service; its runs were ended FAILED
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first[:300]} (run with --debug for the traceback)", file=sys.stderr)
        return 1
