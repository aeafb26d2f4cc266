#!/usr/bin/env python3
"""The Hyperscan scans of the default policy pack, warm and with cold caches, on the policy runs' exchange.

A served request reads the scans' databases (hundreds of KB each) after the gateway has done other work, with
cold caches; the timeit loop of bench/policy_checks.py keeps them warm. Each scan here is timed per call, as
the median of --calls calls, warm (called back to back) and cold (16 MB of memory written just before each
call), the candidates interleaved round by round so that a busy moment of the machine hits them alike. The
request is the 652-word note and the answer the 305-word summary of `bench/run.py --medec-body
--medec-answer-words 300`. It measures the packages the interpreter imports (the checkout the project's .venv was
installed from; ``PYTHONPATH=<another copy>`` puts another first).

    .venv/bin/python bench/scan_costs.py [--calls 400]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from run import MEDEC_CSV, medec_request  # bench/, beside this script

from policies.checks import injection, red_flags
from policies.checks.base import REQUEST_PREFILTERS
from policies.engine import context_of
from text import identifiers
from text.scan import Needles, Prefilter, _Literals, fold, spaced

FLUSH = bytearray(16 * 1024 * 1024)


def flush() -> None:
    FLUSH[::64] = bytes(len(FLUSH) // 64)  # a write to every cache line of 16 MB


def scans() -> dict[str, Callable[[], object]]:
    body, _, answer = medec_request(MEDEC_CSV, 300)
    note = context_of(body).request_text
    folded = fold(note)
    terms = Prefilter(red_flags.TERMS_PREFILTER.patterns)  # each in a database of its own, as before d328d51
    prompt = Prefilter(injection.PREFILTER.patterns)
    chest = folded.index("chest")
    hyperscan_chest = _Literals([" chest"])
    find_chest = Needles({"chest": ("chest",)})
    region = folded[max(0, chest - 200) : chest + 360]
    return {
        "red-flag terms prefilter, the note": lambda: terms.possible(folded),
        "prompt-injection prefilter, the note": lambda: prompt.possible(folded),
        "both, as two databases": lambda: (terms.possible(folded), prompt.possible(folded)),
        "both, one database (REQUEST_PREFILTERS)": lambda: REQUEST_PREFILTERS.scan(folded),
        "`chest` needles, spaced copy and Hyperscan pass": lambda: hyperscan_chest.scan(spaced(folded)),
        "`chest` needles, `str.find`": lambda: find_chest.find(note, folded),
        f"second terms near the first, NEAR_PREFILTER over {len(region)} characters": lambda: (
            red_flags.NEAR_PREFILTER.possible(region)
        ),
        "identifier prefilter, the answer (`phi_leak`)": lambda: identifiers._PREFILTER.possible(answer),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=400, help="calls per scan and state, in rounds of 20 (default 400)")
    args = p.parse_args()
    timed = scans()
    warm: dict[str, list[float]] = {name: [] for name in timed}
    cold: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(max(1, -(-args.calls // 20))):  # rounds of 20, at least one
        for name, scan in timed.items():
            for _ in range(20):
                start = time.perf_counter()
                scan()
                warm[name].append(time.perf_counter() - start)
                flush()
                start = time.perf_counter()
                scan()
                cold[name].append(time.perf_counter() - start)
    print("| scan | warm µs | cold µs |\n|---|---:|---:|")
    for name in timed:
        print(f"| {name} | {statistics.median(warm[name]) * 1e6:.1f} | {statistics.median(cold[name]) * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
