"""Apply one mutant to a copy of the repository and run its guarding tests there.

The copy keeps the working tree untouched (an interrupted run cannot leave a broken build
behind) and the tests import the copy's ``edged`` through PYTHONPATH, daemons started as
``python -m edged`` included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mutants.mutant import Mutant

ROOT = Path(__file__).resolve().parents[2]
# What the tests need of the repository: the package, the tests, pytest's settings, and the
# files some tests read (README, docs, config examples).
COPIED = ("edged", "tests", "pyproject.toml", "README.md", "docs", "systemd", "ansible")
# Exit codes of pytest: 0 all passed, 1 some failed; anything else (interrupted, internal or
# usage error, nothing collected) means the guarding tests did not run as meant.
PASSED, FAILED = 0, 1


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # "killed", "survived" or "error"
    seconds: float
    detail: str


def copy_repository(into: Path) -> Path:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".venv*"))
        elif source.exists():
            shutil.copy2(source, into / name)
    return into


def check_applies(mutant: Mutant, root: Path = ROOT) -> str | None:
    """Why the mutant cannot be applied to the code as it is, or None."""
    path = root / mutant.path
    if not path.is_file():
        return f"{mutant.path}: no such file"
    count = path.read_text().count(mutant.old)
    if count != 1:
        return f"{mutant.path}: the text to change occurs {count} times, not once"
    if mutant.old == mutant.new:
        return "the change changes nothing"
    return None


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", EDGED_TIGHT_TESTS="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, f"the tests ran longer than {timeout:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else done.stderr.strip()[-300:]


def play(mutant: Mutant, copy: Path, timeout: float) -> Outcome:
    started = time.monotonic()
    problem = check_applies(mutant, copy)
    if problem:
        return Outcome(mutant, "error", 0.0, problem)
    path = copy / mutant.path
    original = path.read_text()
    path.write_text(original.replace(mutant.old, mutant.new))
    try:
        code, last = run_tests(copy, mutant.tests, timeout)
    finally:
        path.write_text(original)
    verdict = {PASSED: "survived", FAILED: "killed"}.get(code, "error")
    return Outcome(mutant, verdict, time.monotonic() - started, last)
