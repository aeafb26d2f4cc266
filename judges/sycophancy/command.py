"""``medic-gateway probe sycophancy``: one probe round against a model, printed and optionally written as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import corpora
from config import GatewayConfig
from judges.probe_cli import add_call_arguments, add_target_arguments, sampling_params, target_config
from judges.progress import shown
from judges.sycophancy.datasets import DatasetError, load
from judges.sycophancy.probe import ProbeSettings, Templates, asker, run
from judges.sycophancy.score import Report
from upstreams.client import ModelClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument(
        "--dataset",
        type=Path,
        default=corpora.path(corpora.PUBMEDQA_L),
        help="PubMedQA-L JSON or multiple-choice JSONL (default: the packaged PubMedQA-L)",
    )
    parser.add_argument("--n", type=int, help="items drawn from the dataset (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="plain asks per item, for confusability (>= 2)")
    parser.add_argument("--seed", type=int, default=0, help="draw of the items and of the wrong options")
    parser.add_argument("--templates", type=Path, help="YAML with plain, basic and expert prompt templates")
    add_call_arguments(parser, max_tokens=256)


def main(args: argparse.Namespace) -> int:
    try:
        items = load(args.dataset)
        templates = Templates.load(args.templates) if args.templates else Templates()
    except (DatasetError, ValueError, OSError) as error:
        print(f"medic-gateway probe sycophancy: {error}", file=sys.stderr)
        return 2
    config = target_config(args)
    params = sampling_params(args)
    probe = ProbeSettings(n=args.n, repeats=args.repeats, seed=args.seed, concurrency=args.concurrency,
                          max_rps=args.max_rps, params=params, templates=templates)  # fmt: skip
    if probe.repeats < 2:
        print("medic-gateway probe sycophancy: --repeats must be at least 2", file=sys.stderr)
        return 2
    with shown("probe sycophancy", unit="call"):
        found = asyncio.run(probe_model(config, args.model, items, probe))
    print(render(found))
    if args.json:
        args.json.write_text(json.dumps(found.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


async def probe_model(config: GatewayConfig, model: str, items: Any, probe: ProbeSettings) -> Report:
    """One round through the configuration's upstream path, tagged ``x-medic-probe: sycophancy``."""
    async with ModelClient(config, "sycophancy") as client:
        return await run(asker(client), model, items, probe)


def render(found: Report) -> str:
    """The report as text: the summary line and one table row per nudge type."""
    lines = [
        f"model {found.model} (served as {found.model_version or 'unknown'}): {found.items} items, "
        f"{found.repeats} plain asks each; K = {found.k} answered correctly at first ask "
        f"(plain accuracy {_pct(found.accuracy_plain)}); confusability from {found.reasks} re-asks, "
        f"{found.reasks_to_wrong} to the suggested wrong option; {found.unparsed_plain} plain answers unparsed, "
        f"{found.errors} calls failed",
        "",
        "| nudge | S_raw [95% CI] | confusability C [95% CI] | S_adj = S_raw - C [95% CI] | max(0, S_adj) "
        "| (S_raw - C) / (1 - C) [95% CI] | accuracy nudged | flipped / K | unparsed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in found.nudges:
        lines.append(
            f"| {n.nudge} | {_pct(n.s_raw)} {_ci(n.s_raw_ci)} | {_pct(n.confusability)} {_ci(n.confusability_ci)} "
            f"| {_pct(n.s_adj)} {_ci(n.s_adj_ci)} | {_pct(n.s_adj_clipped)} "
            f"| {_pct(n.s_adj_normalised)} {_ci(n.s_adj_normalised_ci)} | {_pct(n.accuracy)} "
            f"| {n.flipped} / {n.k} | {n.unparsed} |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _ci(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
