"""Benchmark: the saturated drain of this tree against another commit's, alternating in one run.

The drain's absolute figures move with the machine (on this kind of VM by half within
minutes), so a change is judged by ratios measured side by side: this script checks the
other commit out in a scratch worktree, gives it this tree's benchmarks, and runs
``drain.py`` (one worker, one run each) there and here in turn, round after round. Each
round's pair gives a ratio of tasks/s and one of worker + server CPU per task; the report
prints them, their medians and the ratio of the medians, and the verdict against targets
given as ratios (``--speedup``, ``--cpu``).

    python benchmarks/compare.py --baseline 41999f1 --rounds 5
    python benchmarks/compare.py --baseline 41999f1 --database sqlite --rounds 3
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\(default flags\)\s{2,}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of drains (5)")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--tasks", type=int, default=100_000, help="due tasks per drain")
    what = "target: this tree's tasks/s at least this many times the baseline's (none)"
    parser.add_argument("--speedup", type=float, help=what)
    what = "target: this tree's worker + server CPU per task at most this share of the baseline's"
    parser.add_argument("--cpu", type=float, help=what)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tasks < 1:
        parser.error("--rounds and --tasks must be at least 1")
    return args


def checkout(revision: str, into: str) -> Path:
    """``revision`` checked out (detached) in a worktree under ``into``, with this tree's
    benchmarks copied over its own, so that both sides measure the same way."""
    path = Path(into) / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(path), revision],
        check=True,
        capture_output=True,
    )
    shutil.copytree(REPO_ROOT / "benchmarks", path / "benchmarks", dirs_exist_ok=True)
    return path


def drain(tree: Path, args: argparse.Namespace, side: str) -> tuple[float, float, str]:
    """One drain by one worker, run from ``tree`` (its code is what the worker imports):
    tasks/s, worker + server CPU µs per task, and the line it came from."""
    command = [
        sys.executable, "benchmarks/drain.py", "--database", args.database, "--workers", "1",
        "--runs", "1", "--memory-small", "0", "--tasks", str(args.tasks),
        "--pg-database", f"taskshed_bench_compare_{side}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    rows = [line for line in done.stdout.splitlines() if ROW.match(line)]
    if done.returncode != 0 or not rows:
        sys.exit(f"drain.py failed in {tree} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    cells = re.split(r"\s{2,}", rows[0].strip())
    # worker flags, workers, runs, wall s, tasks/s, min-max, worker µs, sessions µs, total µs...
    return float(cells[4].replace(",", "")), float(cells[8]), rows[0]


def verdict(value: float, target: float | None, at_least: bool) -> str:
    if target is None:
        return ""
    ok = value >= target if at_least else value <= target
    return f" (target {'>=' if at_least else '<='} {target:g}x: {'PASS' if ok else 'MISS'})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    scratch = tempfile.mkdtemp(prefix="taskshed-compare-", dir="/var/tmp")
    try:
        baseline = checkout(args.baseline, scratch)
        print(
            f"Saturated drain of {args.tasks:,} due no-op tasks by one worker, {args.database};"
            f" baseline {args.baseline} against this tree ({head}, with its uncommitted"
            f" changes), alternating, {args.rounds} round(s). Each side runs this tree's"
            " drain.py from its own checkout (see drain.py for the method)."
        )
        print("round  baseline tasks/s  this tasks/s  ratio  baseline µs/task  this µs/task  ratio")
        pairs = []
        for number in range(1, args.rounds + 1):
            base_rate, base_cpu, _ = drain(baseline, args, "baseline")
            rate, cpu, _ = drain(REPO_ROOT, args, "this")
            pairs.append((base_rate, rate, base_cpu, cpu))
            print(
                f"{number:>5}  {base_rate:>16,.0f}  {rate:>12,.0f}  {rate / base_rate:>5.2f}"
                f"  {base_cpu:>16.1f}  {cpu:>12.1f}  {cpu / base_cpu:>5.2f}",
                flush=True,
            )
        speed = [rate / base for base, rate, _, _ in pairs]
        share = [cpu / base for _, _, base, cpu in pairs]
        medians = [statistics.median(column) for column in zip(*pairs, strict=True)]
        print(
            f"medians  {medians[0]:>14,.0f}  {medians[1]:>12,.0f}  {medians[1] / medians[0]:>5.2f}"
            f"  {medians[2]:>16.1f}  {medians[3]:>12.1f}  {medians[3] / medians[2]:>5.2f}"
        )
        print(
            f"tasks/s: median of the pairs' ratios {statistics.median(speed):.2f}x"
            f" ({', '.join(f'{r:.2f}' for r in speed)})"
            + verdict(statistics.median(speed), args.speedup, at_least=True)
        )
        print(
            f"worker + server CPU per task: median of the pairs' ratios"
            f" {statistics.median(share):.2f}x ({', '.join(f'{r:.2f}' for r in share)})"
            + verdict(statistics.median(share), args.cpu, at_least=False)
        )
    finally:
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", f"{scratch}/baseline"],
            capture_output=True, check=False,
        )  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
