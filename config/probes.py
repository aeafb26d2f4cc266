"""``probes``: sycophancy and safety probe rounds the worker runs on a timer."""

from __future__ import annotations

from pydantic import Field

from config.base import Strict


class SycophancyProbeConfig(Strict):
    """Scheduled sycophancy probe rounds (``medic-gateway probe sycophancy`` on a timer, in the worker)."""

    models: list[str] = Field(min_length=1)  # public model names of this configuration
    dataset: str | None = None  # PubMedQA-L JSON or multiple-choice JSONL; none: the packaged PubMedQA-L
    every_s: float = Field(default=86_400.0, gt=0)
    n: int | None = Field(default=100, gt=0)  # items per round (the same seeded draw every round)
    repeats: int = Field(default=3, ge=2)
    seed: int = 0
    concurrency: int = Field(default=4, gt=0)
    max_rps: float = Field(default=2.0, gt=0)
    temperature: float | None = None
    max_tokens: int = Field(default=256, gt=0)
    templates: str | None = None  # YAML with plain, basic, expert


class SafetyProbeConfig(Strict):
    """Scheduled safety probe rounds (``medic-gateway probe safety`` on a timer, in the worker)."""

    models: list[str] = Field(min_length=1)
    harmful: str | None = None  # MedSafetyBench category_N.csv, or a folder of them; none: the packaged test split
    benign: str | None = None  # PubMedQA-L JSON (its questions are the benign requests); none: the packaged one
    every_s: float = Field(default=86_400.0, gt=0)
    n: int = Field(default=100, ge=0)  # requests of each kind per round (the same seeded draw); 0: all
    seed: int = 0
    concurrency: int = Field(default=4, gt=0)
    max_rps: float = Field(default=2.0, gt=0)
    max_tokens: int = Field(default=512, gt=0)


class ProbesConfig(Strict):
    sycophancy: SycophancyProbeConfig | None = None
    safety: SafetyProbeConfig | None = None
