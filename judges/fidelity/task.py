"""Which fidelity question a sample asks, and the source and candidate texts it is asked about.

The rules (docs/judges.md, "Applicability"):

* The candidate C is the first choice's text without reasoning blocks (``<think>...</think>``; an unclosed
  block hides the rest of the output).
* The source S is the material the user supplied: tool and function results, and in user messages the
  fenced blocks, else the text after a marker ("Note:", "Context:", "Summarise the following ...:", the last
  of several in a row), else quoted passages of 80 characters or more, else the whole message when it is
  SOURCE_MIN_WORDS words or longer. A system prompt is never a source.
* The task is the one the request states (header ``x-medic-task`` or the model's ``task`` setting, carried
  as ``Sample.task``); otherwise it is inferred from the instruction, the user's words outside the source:
  a transform verb (summarise, write a note, translate, extract, ...) makes it ``transform``; anything else
  with a source is ``grounded_qa`` (the conservative reading: Coverage is then null rather than guessed);
  no source makes it ``open``.
* transform: all scores. grounded_qa: Conformity and Consistency; Coverage is null. open: all null.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.sample import Sample
from protocol.tasks import Task as Kind

OPERATIONS = frozenset({"chat", "text_completion"})
SOURCE_MIN_WORDS = 40  # a user message this long is supplied material even without a marker
SOURCE_ROLES = frozenset({"tool", "function"})

THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
# What follows one of these markers (to the end of the message) is material; what precedes is the instruction.
MARKER = re.compile(
    r"(?:\b(?:note|notes|context|document|report|transcript|text|summary|discharge\s+summary|history|letter"
    r"|record|records|excerpt|abstract|article|passage)\s*:"
    r"|\b(?:summari[sz]e|translate|rewrite|simplify)\s+(?:the\s+|this\s+)?following[^:.\n]{0,60}[:.]?)",
    re.IGNORECASE,
)
BLOCK = re.compile(r"```[^\n]*\n?(.*?)```|\"\"\"(.*?)\"\"\"", re.DOTALL)
QUOTED = re.compile(r"“([^”]{80,})”|\"([^\"\n]{80,})\"")  # material only where no marker says where it starts
TRANSFORM = re.compile(
    r"\b(?:summar(?:ise|ize|ising|izing|y)|condense|shorten|abstract|paraphrase|rephrase|rewrite|simplify"
    r"|translate|extract|convert|reformat|structure|transcribe|tabulate|list\s+(?:all|the|every)"
    r"|(?:write|draft|prepare|produce|create|generate)\s+(?:a|an|the|my)?\s*(?:\w+\s+){0,2}"
    r"(?:note|letter|summary|report|handover|hand-off|discharge|referral|soap|progress))",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Task:
    kind: Kind
    source: str  # "" for open questions
    candidate: str
    stated: bool  # the request said which task it is (header or model config)


def classify(sample: Sample) -> Task:
    """The task, source and candidate of one sample (see the module docstring)."""
    candidate = candidate_text(sample)
    source, instruction = _material(sample)
    if sample.task is not None:
        return Task(sample.task if source else "open", source, candidate, stated=True)
    if not source:
        return Task("open", "", candidate, stated=False)
    kind: Kind = "transform" if TRANSFORM.search(instruction) else "grounded_qa"
    return Task(kind, source, candidate, stated=False)


def applicable(sample: Sample) -> bool:
    """Whether CEF can score the sample at all: an answered chat or completion with an output and a source."""
    if sample.operation not in OPERATIONS or sample.status != 200:
        return False
    task = classify(sample)
    return task.kind != "open" and bool(task.candidate)


def candidate_text(sample: Sample) -> str:
    """The output without reasoning blocks (an unclosed ``<think>`` hides the rest of the output)."""
    text = sample.output()
    if "</think>" in text and "<think>" not in text:  # servers that strip the opening tag
        text = text.split("</think>", 1)[1]
    return THINK.sub("", text).strip()


def source_text(sample: Sample) -> str:
    """The supplied material of a request ("" when there is none)."""
    return _material(sample)[0]


def _material(sample: Sample) -> tuple[str, str]:
    """(source, instruction): the supplied material, and the user's words around it."""
    sources: list[str] = []
    instructions: list[str] = []
    for message in sample.messages():
        role = message.get("role")
        content = _content(message.get("content"))
        if role in SOURCE_ROLES:
            sources.append(content)
        elif role == "user":
            source, instruction = _split(content)
            sources.append(source)
            instructions.append(instruction)
    prompt = sample.request.get("prompt")
    if isinstance(prompt, str):
        source, instruction = _split(prompt)
        sources.append(source)
        instructions.append(instruction)
    return "\n".join(s for s in sources if s.strip()), "\n".join(instructions)


def _content(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _joined(matches: list[re.Match[str]]) -> str:
    return "\n".join(next(g for g in m.groups() if g is not None) for m in matches)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and (text[position].isspace() or text[position] in ".:-"):
        position += 1
    return position


def _split(content: str) -> tuple[str, str]:
    """One user message as (material, instruction): fenced/quoted blocks, else what follows a marker, else
    the whole message when it is long; the instruction is the rest."""
    blocks = list(BLOCK.finditer(content))
    if blocks:
        return _joined(blocks), BLOCK.sub(" ", content)
    marker = MARKER.search(content)
    end = marker.end() if marker is not None else 0
    while marker is not None and (marker := MARKER.match(content, _skip_space(content, end))) is not None:
        end = marker.end()  # "Summarise the following note:\nNote:" - the material follows the last marker
    if end and content[end:].strip():
        return content[end:], content[:end]
    quoted = list(QUOTED.finditer(content))
    if quoted:
        return _joined(quoted), QUOTED.sub(" ", content)
    if len(content.split()) >= SOURCE_MIN_WORDS:
        return content, content[:200]  # no marker: the opening words are the best guess at the instruction
    return "", content
