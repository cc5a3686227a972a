"""`python -m numpy_gpt ...` runs the command line (see numpy_gpt/cli/main.py)."""

from numpy_gpt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
