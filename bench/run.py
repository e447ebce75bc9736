"""``python bench/run.py``: the same as ``python -m bench``, usable without ``-m``."""

import sys
from pathlib import Path

if not __package__:
    # Run as a script, sys.path[0] is bench/ itself: make the ``bench`` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
