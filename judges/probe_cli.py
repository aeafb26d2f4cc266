"""What the probe commands (`medic-gateway probe sycophancy|safety|audit`) share: the model they probe, through
an upstream or a configuration's routes, and how they call it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from config import GatewayConfig, load_config, single_upstream


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--upstream URL | --config FILE, --upstream-key-env, --model."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--upstream", metavar="URL", help="an OpenAI-compatible upstream, e.g. http://vllm:8000/v1")
    source.add_argument("--config", metavar="FILE", help="a gateway configuration: the model's routes are used")
    parser.add_argument("--upstream-key-env", metavar="NAME", help="environment variable holding the upstream key")
    parser.add_argument("--model", required=True, help="the model to probe, as the upstream or the config names it")


def add_call_arguments(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    """--concurrency, --max-rps, --temperature, --max-tokens, --json."""
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight at once, to each model")
    parser.add_argument("--max-rps", type=float, default=10.0, help="call starts per second at most")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: the model's)")
    parser.add_argument("--max-tokens", type=int, default=max_tokens)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")


def target_config(args: argparse.Namespace) -> GatewayConfig:
    """The configuration whose upstream path the probe's calls take."""
    if args.config:
        return load_config(args.config)
    return single_upstream(args.upstream, args.upstream_key_env)


def sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling parameters every call of a round sends."""
    params: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    return params
