"""python -m tests.mutants [--fast] [--only NAME ...] [--list] [--no-baseline]

Plays each mutant of the catalog on a copy of the repository and prints killed / survived.
Exit 0 when every mutant played was killed; 1 when one survived or could not be played; 2 when
the guarding tests fail on the unmutated code (then no kill would mean anything).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.mutants.catalog import MUTANTS
from tests.mutants.mutant import Mutant
from tests.mutants.play import Outcome, check_applies, copy_repository, play, run_tests


def _chosen(args: argparse.Namespace) -> list[Mutant]:
    chosen = [m for m in MUTANTS if not args.fast or m.fast]
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            sys.exit(f"no mutant named {', '.join(sorted(unknown))} (see --list)")
        chosen = [m for m in chosen if m.name in args.only]
    return chosen


def _baseline(copy: Path, chosen: list[Mutant], timeout: float) -> None:
    tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    print(f"baseline: {len(tests)} guarding tests on the unmutated code ...", flush=True)
    code, last = run_tests(copy, tests, timeout * 2)
    if code != 0:
        print(f"baseline failed ({last}): fix the tests before playing mutants", flush=True)
        sys.exit(2)


def _report(outcomes: list[Outcome], seconds: float) -> int:
    killed = sum(o.verdict == "killed" for o in outcomes)
    print(f"\n{len(outcomes)} mutants, {killed} killed, "
          f"{sum(o.verdict == 'survived' for o in outcomes)} survived, "
          f"{sum(o.verdict == 'error' for o in outcomes)} not played, in {seconds:.0f} s")
    for o in outcomes:
        if o.verdict != "killed":
            print(f"  {o.verdict.upper()}: {o.mutant.name} ({o.mutant.promise}): {o.detail}")
    return 0 if killed == len(outcomes) else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants")
    parser.add_argument("--fast", action="store_true", help="only the subset .ci/run plays")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these mutants")
    parser.add_argument("--list", action="store_true", help="print the catalog and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the guarding tests on the unmutated code first")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one mutant's tests may take (default 600)")
    args = parser.parse_args()
    chosen = _chosen(args)
    if args.list:
        for m in chosen:
            problem = check_applies(m)
            print(f"{m.name:40} {'fast ' if m.fast else '     '}{m.path}"
                  f"{'  (' + problem + ')' if problem else ''}\n{'':40} {m.promise}")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edged-mutants-") as tmp:
        copy = copy_repository(Path(tmp))
        if not args.no_baseline:
            _baseline(copy, chosen, args.timeout)
        outcomes = []
        for number, mutant in enumerate(chosen, 1):
            outcome = play(mutant, copy, args.timeout)
            outcomes.append(outcome)
            print(f"[{number}/{len(chosen)}] {outcome.verdict:8} {outcome.seconds:6.1f} s  "
                  f"{mutant.name}", flush=True)
    return _report(outcomes, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
