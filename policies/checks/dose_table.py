"""The curated table of maximum doses (policies/data/max_doses.yaml) and its validation.

Format, sources and method: policies/data/README.md. An invalid table is a DoseTableError naming the file,
the entry and the key.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator
from pydantic_core import ErrorDetails

TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "max_doses.yaml"
Route = Literal["oral", "subcutaneous", "intramuscular", "intravenous", "topical", "transdermal", "rectal", "inhaled"]
Population = Literal["adult", "paediatric", "older_adult"]
UNIT_MG = {"mg": 1.0, "mcg": 0.001}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    max_single: PositiveFloat | None = None
    max_daily: PositiveFloat | None = None


class PaediatricLimits(Limits):
    max_per_kg_dose: PositiveFloat | None = None
    max_per_kg_day: PositiveFloat | None = None


class OlderAdultLimits(Limits):
    age_over: int = Field(ge=50, le=90)


class DrugEntry(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z -]*$")
    synonyms: tuple[str, ...] = ()
    unit: Literal["mg", "mcg"] = "mg"
    routes: tuple[Route, ...] = ("oral",)
    frequency: Literal["any", "weekly"] = "any"
    adult: Limits = Limits()
    paediatric: PaediatricLimits | None = None
    older_adult: OlderAdultLimits | None = None
    source: tuple[str, ...] = Field(min_length=1)
    checked: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    confidence: Literal["high", "review"]
    note: str = ""

    @model_validator(mode="after")
    def _limits_make_sense(self) -> DrugEntry:
        for synonym in self.synonyms:
            if not re.fullmatch(r"[a-z][a-z0-9 -]*", synonym):
                raise ValueError(f"synonym {synonym!r} must be lower-case letters, digits, spaces or hyphens")
        if self.frequency == "weekly" and self.adult.max_single is None:
            raise ValueError("a weekly drug needs adult.max_single (its weekly dose)")
        blocks = [block.model_dump() for block in (self.adult, self.paediatric, self.older_adult) if block]
        if not any(value is not None for b in blocks for key, value in b.items() if key.startswith("max_")):
            raise ValueError("an entry needs at least one limit")
        return self


class Omission(_Strict):
    name: str
    reason: str = Field(min_length=1)


class DoseTable(_Strict):
    version: Literal[1]
    drugs: tuple[DrugEntry, ...] = Field(min_length=1)
    omitted: tuple[Omission, ...] = ()

    @model_validator(mode="after")
    def _names_unique(self) -> DoseTable:
        owner: dict[str, str] = {}
        for drug in self.drugs:
            for name in {drug.name, *drug.synonyms}:
                if owner.setdefault(name, drug.name) != drug.name:
                    raise ValueError(f"name {name!r} is used by both {owner[name]!r} and {drug.name!r}")
        for omission in self.omitted:
            if omission.name in owner:
                raise ValueError(f"{omission.name!r} is both omitted and in the table (as {owner[omission.name]!r})")
        return self


class DoseTableError(ValueError):
    """The dose table is invalid; the message names the file, the entry and the key."""


def load_table(path: Path = TABLE_PATH) -> DoseTable:
    """The table at ``path``, validated; a DoseTableError names the entry and key of the first problems."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DoseTableError(f"{path}: not valid YAML: {exc}") from None
    try:
        return DoseTable.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(raw, error) for error in exc.errors()[:5]]
        raise DoseTableError(f"{path}: " + "; ".join(problems)) from None


def _describe(raw: Any, error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    where = "table"
    if len(loc) >= 2 and loc[0] == "drugs" and isinstance(loc[1], int):
        drugs = raw.get("drugs") if isinstance(raw, dict) else None
        entry = drugs[loc[1]] if isinstance(drugs, list) and loc[1] < len(drugs) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        where, loc = f"drug {name!r} (drugs[{loc[1]}])", loc[2:]
    key = ".".join(str(part) for part in loc)
    return f"{where} key {key}: {error['msg']}" if key else f"{where}: {error['msg']}"


@functools.cache
def default_table() -> DoseTable:
    """The shipped table, loaded and validated once per process."""
    return load_table()
