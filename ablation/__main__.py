"""`python -m ablation` runs the CLI."""

from ablation.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
