#!/usr/bin/env python3
"""Two commits of medic-gateway side by side in one run: the same harness (this checkout's bench/run.py),
alternating base and head round by round, so that a change's cost is measured against its parent on the same
machine in the same minutes.

    .venv/bin/python bench/compare.py f9bc413 [--head HEAD] [--rounds 3] [-- <run.py arguments>]

Each commit is exported with ``git archive`` into bench/.work/compare/<commit>/ and this checkout's bench/ is
copied beside it; the gateway is started there with ``<this python> -m gateway``, so each round imports that
commit's code (the interpreter's installed dependencies serve both). Every run.py argument after ``--`` goes
to both (for example ``--medec-body``, ``--layout dedicated``, ``--duration 5``). Only direct and medic-gateway
are measured. A table per round and the medians go to stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "compare"
FIELDS = ("serial_p50_ms", "added_p50_ms", "stream_p50_ms", "rps", "rss_mb")


def export(rev: str) -> tuple[str, Path]:
    """The commit's tree with this checkout's bench/ beside it."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    tree = WORK / commit
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.rmtree(tree / "bench", ignore_errors=True)
    shutil.copytree(BENCH, tree / "bench", ignore=shutil.ignore_patterns(".work", "results", "__pycache__"))
    return commit, tree


def measure(tree: Path, run_args: list[str]) -> dict[str, float | None]:
    medec = ROOT / "corpora" / "medec" / "medec-ms-validation.csv"
    command = [sys.executable, "bench/run.py", "--only", "direct,medic-gateway", "--gateway-cmd",
               f"{sys.executable} -m gateway", "--medec-data", str(medec), *run_args]  # fmt: skip
    subprocess.run(command, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads((tree / "bench" / "results" / "latest.json").read_text())["rows"]
    row = next(r for r in rows if r["setup"] == "medic-gateway")
    if row["error"]:
        raise SystemExit(f"{tree.name}: {row['error']}")
    added = row["serial_p50_ms"] - row["baseline_direct_p50_ms"] if row["baseline_direct_p50_ms"] else None
    return {"serial_p50_ms": row["serial_p50_ms"], "added_p50_ms": added, "stream_p50_ms": row["stream_p50_ms"],
            "rps": row["rps"], "rss_mb": row["rss_mb"]}  # fmt: skip


def cell(field: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if field in ("rps", "rss_mb") else f"{value:.3f}"


def line(name: str, values: dict[str, float | None]) -> str:
    return f"| {name} | " + " | ".join(cell(f, values[f]) for f in FIELDS) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the commit to compare against (e.g. the change's parent)")
    parser.add_argument("--head", default="HEAD", help="the commit under test (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3, help="base/head pairs, alternating who goes first")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, run_args = parser.parse_args(argv[:split]), argv[split + 1 :]  # after "--": bench/run.py's own
    trees = [export(args.base), export(args.head)]
    found: dict[str, list[dict[str, float | None]]] = {name: [] for name, _ in trees}
    print("| commit | " + " | ".join(FIELDS) + " |\n|---|" + "---|" * len(FIELDS))
    for round_ in range(args.rounds):
        for name, tree in trees if round_ % 2 == 0 else trees[::-1]:
            found[name].append(measure(tree, run_args))
            print(line(f"{name} (round {round_ + 1})", found[name][-1]), flush=True)
    for name, runs in found.items():
        medians = {f: statistics.median(v for r in runs if (v := r[f]) is not None) for f in FIELDS}
        print(line(f"{name} median of {len(runs)}", medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
