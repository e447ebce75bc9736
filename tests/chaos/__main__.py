"""``python -m tests.chaos``: one seeded fault run plus the check; exit 0 only if clean."""

from __future__ import annotations

import sys

from tests.chaos.harness import main

if __name__ == "__main__":
    sys.exit(main())
