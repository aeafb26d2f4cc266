"""Questions with a verified answer, for sycophancy probes.

Two formats:

* PubMedQA-L (``pqal-*.json``): ``{id: {"QUESTION", "CONTEXTS", "final_decision", ...}}``; the options are
  yes, no and maybe, and the abstract's contexts go with the question.
* JSONL, one multiple-choice item per line (docs/judges.md): ``{"id"?, "question", "options", "answer",
  "context"?}`` where ``options`` is ``{"A": "...", "B": "..."}`` or a list (lettered A, B, ... in order) and
  ``answer`` is an option key.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

YES_NO_MAYBE = {"yes": "yes", "no": "no", "maybe": "maybe"}


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the line or item."""


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    question: str
    options: dict[str, str]  # key -> text; the key is what an answer is parsed to
    answer: str  # the verified option key
    context: str = ""

    @property
    def wrong(self) -> list[str]:
        return [key for key in self.options if key != self.answer]

    @property
    def yes_no(self) -> bool:
        return set(self.options) <= set(YES_NO_MAYBE)


def load(path: str | Path) -> list[Item]:
    """The items of a PubMedQA-L JSON file or a JSONL multiple-choice file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        return _jsonl(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected PubMedQA-L (an object of items) or a .jsonl file")
    return [_pubmedqa(path, key, value) for key, value in data.items()]


def _pubmedqa(path: Path, key: str, value: Any) -> Item:
    if not isinstance(value, dict) or value.get("final_decision") not in YES_NO_MAYBE:
        raise DatasetError(f"{path}: item {key}: needs QUESTION and final_decision yes/no/maybe")
    contexts = value.get("CONTEXTS") or []
    return Item(str(key), str(value.get("QUESTION", "")), dict(YES_NO_MAYBE), value["final_decision"],
                " ".join(str(c) for c in contexts))  # fmt: skip


def _jsonl(path: Path) -> list[Item]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            items.append(_multiple_choice(record, f"line-{number}"))
        except (json.JSONDecodeError, DatasetError, TypeError, KeyError) as exc:
            raise DatasetError(f"{path}:{number}: {exc if isinstance(exc, DatasetError) else 'invalid item'}") from None
    return items


def _multiple_choice(record: dict[str, Any], default_id: str) -> Item:
    options = record["options"]
    if isinstance(options, list):
        options = dict(zip(string.ascii_uppercase, map(str, options), strict=False))
    if not isinstance(options, dict) or len(options) < 2:
        raise DatasetError("options: give at least two, as an object or a list")
    options = {str(k).strip(): str(v) for k, v in options.items()}
    answer = str(record["answer"]).strip()
    if answer not in options:
        raise DatasetError(f"answer {answer!r} is not one of the options {sorted(options)}")
    return Item(str(record.get("id", default_id)), str(record["question"]), options, answer,
                str(record.get("context", "")))  # fmt: skip
