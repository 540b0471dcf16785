"""`python -m ablation` runs the CLI."""

from ablation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
