"""``medic-gateway probe safety``: one safety probe round (``judges.safety.probe``) against a model, printed and
optionally written as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from config import ConfigError, JudgeLLMConfig
from judges.probe_cli import add_call_arguments, add_target_arguments, sampling_params, target_config
from judges.progress import shown
from judges.safety.datasets import BENIGN_DEFAULT, HARMFUL_DEFAULT, load_benign, load_harmful
from judges.safety.probe import SafetySettings, probe_model
from judges.safety.score import Harm, Rate, SafetyReport
from judges.sycophancy.datasets import DatasetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--harmful", type=Path, default=HARMFUL_DEFAULT, metavar="FILE_OR_DIR",
                        help="MedSafetyBench category_N.csv or a folder (default: the packaged ones)")  # fmt: skip
    parser.add_argument("--benign", type=Path, default=BENIGN_DEFAULT, metavar="FILE",
                        help="PubMedQA-L JSON, questions as benign requests (default: the packaged one)")  # fmt: skip
    parser.add_argument("--n", type=int, default=100, help="requests drawn of each kind (default 100; 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="the draw of the requests and the bootstrap")
    parser.add_argument("--judge-url", metavar="URL", help="an OpenAI-compatible judge endpoint, for harmfulness")
    parser.add_argument("--judge-model", metavar="NAME", help="the judge model (with --judge-url)")
    parser.add_argument("--judge-key-env", metavar="NAME", help="environment variable holding the judge key")
    add_call_arguments(parser, max_tokens=512)


def main(args: argparse.Namespace) -> int:
    try:
        _check(args)
        harmful, benign = load_harmful(args.harmful), load_benign(args.benign)
        judge = _judge(args)
        config = target_config(args)
    except (DatasetError, ValueError, OSError, ConfigError) as error:
        print(f"medic-gateway probe safety: {error}", file=sys.stderr)
        return 2
    with shown("probe safety", unit="call"):  # one call per request drawn (a rating judge's calls not counted)
        found = asyncio.run(probe_model(config, args.model, harmful, benign, _settings(args), judge))
    print(render(found))
    if args.json:
        args.json.write_text(json.dumps(found.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def _check(args: argparse.Namespace) -> None:
    if args.n < 0:
        raise ValueError("--n must be 0 (all) or more")
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if bool(args.judge_url) != bool(args.judge_model):
        raise ValueError("--judge-url and --judge-model go together")


def _judge(args: argparse.Namespace) -> JudgeLLMConfig | None:
    if not args.judge_url:
        return None
    return JudgeLLMConfig(model=args.judge_model, base_url=args.judge_url, api_key_env=args.judge_key_env,
                          concurrency=args.concurrency)  # fmt: skip


def _settings(args: argparse.Namespace) -> SafetySettings:
    params = sampling_params(args)
    sources = {"harmful": str(args.harmful), "benign": str(args.benign)}
    return SafetySettings(n=args.n, seed=args.seed, concurrency=args.concurrency, max_rps=args.max_rps,
                          params=params, sources=sources)  # fmt: skip


def render(found: SafetyReport) -> str:
    """The report as text: a summary line, the indicator table and the per-category table."""
    h, b = found.harmful, found.benign
    lines = [
        f"model {found.model} (served as {found.model_version or 'unknown'}): {h.sent} harmful requests "
        f"(MedSafetyBench), {b.sent} benign (PubMedQA-L questions); seed {found.settings['seed']}; failed calls "
        f"{h.failed} harmful, {b.failed} benign; empty answers {h.empty} harmful, {b.empty} benign (not scored); "
        f"judge {found.judge_method or 'none'}",
        "",
        "| indicator | value [95% CI] | count |",
        "|---|---|---|",
        _rate_row("refusal of harmful requests (refused or partial)", h.refused_or_partial),
        _rate_row("refusal of harmful requests (refused alone)", h.refused),
        _rate_row("over-refusal of benign requests (refused or partial)", b.refused_or_partial),
        _rate_row("over-refusal of benign requests (refused alone)", b.refused),
    ]
    lines += _harm_rows("harmful", h.harm) + _harm_rows("benign", b.harm)
    lines += ["", "| MedSafetyBench category | refused or partial [95% CI] | count |", "|---|---|---|"]
    lines += [_rate_row(category, rate) for category, rate in found.categories.items()]
    return "\n".join(lines)


def _rate_row(name: str, rate: Rate) -> str:
    return f"| {name} | {_pct(rate.rate)} {_ci(rate.ci, 100, 1)} | {rate.k} / {rate.n} |"


def _harm_rows(kind: str, harm: Harm | None) -> list[str]:
    if harm is None:
        return []
    mean = "n/a" if harm.mean is None else f"{harm.mean:.2f} {_ci(harm.mean_ci, 1, 2)}"
    spread = ", ".join(f"{score}: {count}" for score, count in harm.distribution.items())
    return [
        f"| mean harmfulness 1-5, {kind} requests | {mean} | {harm.rated} rated, {harm.judge_failed} judge failures |",
        _rate_row(f"harmfulness 4-5 (alert), {kind} requests", harm.alert),
        f"| harmfulness distribution, {kind} requests | {spread} | {harm.rated} |",
    ]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _ci(interval: tuple[float, float] | None, scale: float, digits: int) -> str:
    return "" if interval is None else f"[{scale * interval[0]:.{digits}f}, {scale * interval[1]:.{digits}f}]"
