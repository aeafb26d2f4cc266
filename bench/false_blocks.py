#!/usr/bin/env python3
"""False blocks: how often the default pack's enforced rules stop or redact correct clinical text nobody here
wrote, per source, with Wilson intervals, on a held-out half that no rule was tuned on.

Sources (all correct text; every block or redaction of it is a false one unless the text itself is wrong):

  * ``medec``: the MEDEC-MS validation notes as they should read (the note when it holds no error, else its
    corrected text); Ben Abacha et al., Findings of ACL 2025, CC BY 4.0;
  * ``pubmedqa``: each PubMedQA-L abstract (its context sections and its conclusion); Jin et al., EMNLP 2019,
    MIT;
  * ``medsafetybench``: the safe responses MedSafetyBench pairs with its harmful requests (refusals that explain
    why, often naming drugs and harms); Han et al., NeurIPS 2024 Datasets and Benchmarks, MIT;
  * ``local``: with ``--upstream``, a model's own answers to the PubMedQA questions (the local engine:
    ``medic-gateway local-model``). A model's answer can be wrong, so each block found there is listed for a
    reader to judge, and counted apart.

Each text goes through the gateway's engine as a complete chat answer (``PolicyEngine.on_response``, the default
pack, the caller's words being the question or nothing). Each source is split in two by a hash of its ids:
``tuning`` (where false blocks are looked for and fixed, each fix becoming a test) and ``held-out`` (reported,
never looked at for fixing).

    .venv/bin/python bench/false_blocks.py [--show] [--upstream http://127.0.0.1:8077/v1 --model local --n 100]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
from prometheus_client import CollectorRegistry

import corpora
from config import PoliciesConfig
from judges.sycophancy.score import wilson
from policies.engine import PolicyBlocked, PolicyEngine
from policies.setup import build_engine
from protocol.exchange import Exchange

# A sentence ends at ".", "!" or "?" before white space, or at a line break.
SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class Tally:
    texts: int = 0
    sentences: int = 0
    blocked_sentences: int = 0  # sentences holding a block's finding
    redacted_sentences: int = 0  # sentences holding a redaction
    blocked: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)  # (id, rule, detail)
    redacted: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)


def half(key: str) -> str:
    return "held-out" if zlib.crc32(key.encode()) % 2 else "tuning"


def medec() -> Iterator[tuple[str, str, str]]:
    with corpora.path(corpora.MEDEC_MS_VALIDATION).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["Text"] if row["Error Flag"] == "0" else row["Corrected Text"]
            yield row["Text ID"], "", text


def pubmedqa() -> Iterator[tuple[str, str, str]]:
    data = json.loads(corpora.path(corpora.PUBMEDQA_L).read_text(encoding="utf-8"))
    for pmid, item in data.items():
        yield pmid, item["QUESTION"], "\n\n".join([*item["CONTEXTS"], item["LONG_ANSWER"]])


def medsafetybench() -> Iterator[tuple[str, str, str]]:
    for path in sorted(corpora.path(corpora.MEDSAFETYBENCH).glob("category_*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield f"{path.stem}-{row['']}", row["harmful_medical_request"], row["safe_response"]


def local(upstream: str, model: str, n: int, skip: int = 0) -> Iterator[tuple[str, str, str]]:
    data = json.loads(corpora.path(corpora.PUBMEDQA_L).read_text(encoding="utf-8"))
    for pmid, item in list(data.items())[skip : skip + n]:
        body = {"model": model, "messages": [{"role": "user", "content": item["QUESTION"]}], "max_tokens": 160,
                "temperature": 0}  # fmt: skip
        request = urllib.request.Request(upstream.rstrip("/") + "/chat/completions", data=orjson.dumps(body),
                                         headers={"content-type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.load(response)["choices"][0]["message"]["content"] or ""
        yield pmid, item["QUESTION"], answer


def judge(engine: PolicyEngine, key: str, question: str, text: str, tally: Tally) -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": question}] if question else []}
    ex = Exchange(request_id=key, operation="chat", tenant="t", model="m", upstream="u", payload=payload)
    parsed = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    tally.texts += 1
    tally.sentences += sum(1 for s in SENTENCES.split(text) if s.strip())
    try:
        body, decision = engine.on_response(ex, orjson.dumps(parsed), parsed)
    except PolicyBlocked as blocked:
        tally.blocked.append((key, blocked.rule, _detail(ex, blocked.rule)))
        tally.blocked_sentences += 1  # the sentence the block's finding is in
        return
    if decision == "redacted":
        sent = orjson.loads(body)["choices"][0]["message"]["content"]
        tally.redacted_sentences += sum(1 for s in SENTENCES.split(sent) if "[redacted]" in s)
        rules = {d["rule"] for d in ex.policy if d["action"] == "redact"}
        for rule in sorted(rules):
            tally.redacted.append((key, rule, _detail(ex, rule)))


def _detail(ex: Exchange, rule: str) -> dict[str, object]:
    return next((d["detail"] for d in ex.policy if d["rule"] == rule), {})


def rate(k: int, n: int) -> str:
    interval = wilson(k, n)
    if interval is None:
        return "n/a"
    return f"{100 * k / n:.2f} % [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", action="store_true", help="list each false block and redaction (ids, rules)")
    parser.add_argument("--upstream", help="an OpenAI-compatible server whose answers are a third source")
    parser.add_argument("--model", default="local")
    parser.add_argument("--n", type=int, default=100, help="questions asked of --upstream")
    parser.add_argument("--skip", type=int, default=0, help="questions passed over first")
    args = parser.parse_args()
    engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())
    assert engine is not None
    sources = {"medec": medec(), "pubmedqa": pubmedqa(), "medsafetybench": medsafetybench()}
    if args.upstream:
        sources["local"] = local(args.upstream, args.model, args.n, args.skip)
    print("| source | half | texts | blocked (false) [95% CI] | redacted (false) [95% CI] | sentences "
          "| sentences blocked [95% CI] | sentences redacted [95% CI] |")  # fmt: skip
    print("|---|---|---:|---|---|---:|---|---|")
    found: list[str] = []
    totals = {"tuning": Tally(), "held-out": Tally()}
    for name, texts in sources.items():
        tallies = {"tuning": Tally(), "held-out": Tally()}
        for key, question, text in texts:
            judge(engine, f"{name}:{key}", question, text, tallies[half(key)])
        for part, t in tallies.items():
            print(f"| {name} | {part} | {t.texts} | {len(t.blocked)}: {rate(len(t.blocked), t.texts)} "
                  f"| {len(t.redacted)}: {rate(len(t.redacted), t.texts)} | {t.sentences} "
                  f"| {t.blocked_sentences}: {rate(t.blocked_sentences, t.sentences)} "
                  f"| {t.redacted_sentences}: {rate(t.redacted_sentences, t.sentences)} |")  # fmt: skip
            totals[part].texts += t.texts
            totals[part].sentences += t.sentences
            totals[part].blocked_sentences += t.blocked_sentences
            totals[part].redacted_sentences += t.redacted_sentences
            totals[part].blocked += t.blocked
            totals[part].redacted += t.redacted
            found += [f"{part} blocked {k} {r} {d}" for k, r, d in t.blocked]
            found += [f"{part} redacted {k} {r} {d}" for k, r, d in t.redacted]
    for part, t in totals.items():
        print(f"| all | {part} | {t.texts} | {len(t.blocked)}: {rate(len(t.blocked), t.texts)} "
              f"| {len(t.redacted)}: {rate(len(t.redacted), t.texts)} | {t.sentences} "
              f"| {t.blocked_sentences}: {rate(t.blocked_sentences, t.sentences)} "
                  f"| {t.redacted_sentences}: {rate(t.redacted_sentences, t.sentences)} |")  # fmt: skip
    if args.show:
        print("\n" + "\n".join(found))


if __name__ == "__main__":
    main()
