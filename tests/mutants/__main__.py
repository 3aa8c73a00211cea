"""``python -m tests.mutants [NAME ...]`` (``make mutants``): run the curated mutants, report, fail on a survivor.

Each mutant runs only its own killing tests, with ``-x``, against a mutated copy of the package.
Exit status 0 when every mutant is killed; 1 when one survives, its replacement no longer
applies, or the copy would not be the code under test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .catalogue import MUTANTS
from .mutate import StaleMutant, copy_package, imported_from, run_mutant, run_tests, skipped_here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.path}\n    killed by {' '.join(m.tests)}")
        return 0

    with tempfile.TemporaryDirectory() as tmp:  # the runner's own check that the copy is what gets imported
        site = copy_package(Path(tmp))
        where = imported_from(site)
        if not where.is_relative_to(site):
            print(f"the tests would import {where}, not the mutated copy: mutants cannot run", file=sys.stderr)
            return 1
        # A test that fails without any mutant would "kill" every mutant: the killing tests must
        # pass on the unmutated copy first.
        tests = sorted({test for m in chosen for test in m.tests})
        code, output, seconds = run_tests(site, tests, "baseline", timeout=1800)
        if code != 0:
            print(f"the killing tests fail on the unmutated code (pytest exit status {code}), so no mutant "
                  "can be judged; their output ends:\n" + "\n".join("    " + line for line in output.splitlines()[-25:]),
                  flush=True)
            return 1
        print(f"baseline: the {len(tests)} killing tests pass on the unmutated code ({seconds:.0f} s)", flush=True)

    failures, skipped, started = [], [], time.perf_counter()
    for number, mutant in enumerate(chosen, 1):
        try:
            outcome = run_mutant(mutant)
        except StaleMutant as exc:
            print(f"[{number}/{len(chosen)}] STALE    {mutant.name}: {exc}", flush=True)
            failures.append(mutant.name)
            continue
        if skipped_here(outcome.returncode, outcome.output):
            print(f"[{number}/{len(chosen)}] skipped  {mutant.name}: its tests do not run on this machine "
                  f"({' '.join(mutant.tests)})", flush=True)
            skipped.append(mutant.name)
            continue
        verdict = "killed" if outcome.killed else "SURVIVED"
        print(f"[{number}/{len(chosen)}] {verdict:8} {mutant.name} ({outcome.seconds:.0f} s) by "
              f"{' '.join(mutant.tests)}", flush=True)
        if not outcome.killed:
            failures.append(mutant.name)
            print(f"    pytest exit status {outcome.returncode} (1 = tests failed); its output ends:\n"
                  + "\n".join("    " + line for line in outcome.output.splitlines()[-25:]), flush=True)
    total = time.perf_counter() - started
    print(f"{len(chosen) - len(failures) - len(skipped)} of {len(chosen)} mutants killed in {total:.0f} s"
          + (f"; not killed: {', '.join(failures)}" if failures else "")
          + (f"; not judged on this machine: {', '.join(skipped)}" if skipped else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
