"""Command line: `main.py` is the entry point, `parser.py` the arguments, `commands.py` one function per
subcommand. No work happens here; bad input is one `error:` line and exit code 2."""
