"""``medic-gateway probe audit``: one audit probe round (``judges.safety.audit``) against a model, printed and
optionally written as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from judges.probe_cli import add_call_arguments, add_target_arguments, sampling_params, target_config
from judges.progress import shown
from judges.safety.audit import AuditSettings, probe_model
from judges.safety.audit_score import AuditReport, Rate
from judges.safety.datasets import DEFAULT_DATASET, AuditDatasetError, load_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, metavar="CSV",
                        help="a MEDEC CSV (default: the packaged MEDEC-MS validation split)")  # fmt: skip
    parser.add_argument("--n", type=int, default=100, help="notes drawn, balanced with/without error; 0 for all")
    parser.add_argument("--seed", type=int, default=0, help="the draw of the notes")
    add_call_arguments(parser, max_tokens=512)


def main(args: argparse.Namespace) -> int:
    try:
        notes = load_notes(args.dataset)
    except AuditDatasetError as error:
        print(f"medic-gateway probe audit: {error}", file=sys.stderr)
        return 2
    if args.n < 0 or args.concurrency < 1:
        print("medic-gateway probe audit: --n must be 0 or more and --concurrency 1 or more", file=sys.stderr)
        return 2
    config = target_config(args)
    params = sampling_params(args)
    audit = AuditSettings(n=args.n, seed=args.seed, concurrency=args.concurrency, max_rps=args.max_rps, params=params)
    with shown("probe audit", unit="call"):
        found = asyncio.run(probe_model(config, args.model, notes, audit))
    found.settings["dataset"] = str(args.dataset)
    print(render(found))
    if args.json:
        args.json.write_text(json.dumps(found.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def render(found: AuditReport) -> str:
    """The report as text: a summary line, the indicator table, the per-type table and the citation."""
    lines = [
        f"model {found.model} (served as {found.model_version or 'unknown'}): {found.notes} notes, "
        f"{found.with_error} with a planted error; unparsed replies: {found.unparsed} (wrong for accuracy, left out "
        f"of detection and false alarms); failed calls: {found.failed} (not scored)",
        "",
        "| indicator | value [95% CI] | k / n |",
        "|---|---|---|",
        _row("error-flag accuracy (all notes)", found.flag_accuracy),
        _row("error-sentence accuracy (notes with an error)", found.sentence_accuracy),
        _row("detection: flagged, notes with an error (parsed)", found.detection),
        _row("false alarm: flagged, notes without an error (parsed)", found.false_alarm),
        _row("unparsed replies", found.unparsed_share),
        _row("correction token F1 > 0.5 (notes with an error)", found.correction_above_half),
        f"| correction token F1, mean (notes with an error; 0 if none) | {_num(found.correction_f1)} | "
        f"{found.sentence_accuracy.n} notes |",
        f"| correction token F1, mean where the sentence was found | {_num(found.correction_f1_found)} | "
        f"{found.sentence_accuracy.k} notes |",
        "",
        "| error type | error-sentence accuracy [95% CI] | k / n |",
        "|---|---|---|",
        *(_row(name, rate) for name, rate in found.by_type.items()),
        "",
        found.citation,
    ]
    return "\n".join(lines)


def _row(name: str, rate: Rate) -> str:
    interval = "" if rate.ci is None else f" [{100 * rate.ci[0]:.1f}, {100 * rate.ci[1]:.1f}]"
    value = "n/a" if rate.value is None else f"{100 * rate.value:.1f} %"
    return f"| {name} | {value}{interval} | {rate.k} / {rate.n} |"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
