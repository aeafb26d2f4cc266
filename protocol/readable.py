"""Every field of an OpenAI answer whose text can reach a reader, found and rewritten by one table.

A policy that reads only ``message.content`` lets through what an upstream puts anywhere else: agents put doses
and identifiers in tool call arguments, reasoning parsers emit ``reasoning_content`` (vLLM) or ``reasoning``,
``content`` may be a list of text parts, a refusal has its own field, an audio answer its transcript. Each is a
*field*: a path inside one choice, and a key that names it across the chunks of a stream (tool calls are keyed
by their ``index``, not by where they sit in a chunk).

Read: ``content`` (a string, or each text part of a list), ``refusal``, ``reasoning_content``, ``reasoning``,
``tool_calls[].function.arguments``, ``function_call.arguments``, ``audio.transcript``, ``thinking_blocks[].thinking``
(Anthropic's, through the translated providers), in ``message`` (complete answers) and ``delta`` (chunks); ``text``
of legacy completions. Not read (docs/policies.md lists them): names
(of tools and functions), ids, ``logprobs``, annotations' URLs, images and audio data.
"""

from __future__ import annotations

from typing import Any

Path = tuple[str | int, ...]  # keys and list positions inside a choice
Key = tuple[str | int, ...]  # the field across a stream's chunks

_PLAIN = ("refusal", "reasoning_content", "reasoning")
_TEXT_PARTS = ("text", "output_text")
_NESTED = (("function_call", "arguments"), ("audio", "transcript"))


def fields(choice: Any) -> list[tuple[Key, Path, str]]:
    """(key, path, text) of every readable text field of one choice, complete or a chunk's delta."""
    if not isinstance(choice, dict):
        return []
    found: list[tuple[Key, Path, str]] = []
    text = choice.get("text")
    if isinstance(text, str):
        found.append((("text",), ("text",), text))
    for holder in ("message", "delta"):
        message = choice.get(holder)
        if isinstance(message, dict):
            found += _message_fields(holder, message)
    return found


def _message_fields(holder: str, message: dict[str, Any]) -> list[tuple[Key, Path, str]]:
    found = _content(holder, message.get("content"))
    for name in _PLAIN:
        value = message.get(name)
        if isinstance(value, str):
            found.append(((name,), (holder, name), value))
    for name, inner in _NESTED:  # an object holding one text: {"function_call": {"arguments": ...}}
        value = message.get(name)
        if isinstance(value, dict) and isinstance(value.get(inner), str):
            found.append(((name,), (holder, name, inner), value[inner]))
    blocks = message.get("thinking_blocks")
    for position, block in enumerate(blocks if isinstance(blocks, list) else ()):
        if isinstance(block, dict) and isinstance(block.get("thinking"), str):
            path = (holder, "thinking_blocks", position, "thinking")
            found.append((("thinking_blocks", position), path, block["thinking"]))
    return found + _tool_calls(holder, message.get("tool_calls"))


def _content(holder: str, content: Any) -> list[tuple[Key, Path, str]]:
    """``content``: a string, or a list of parts of which the text parts are read."""
    if isinstance(content, str):
        return [(("content",), (holder, "content"), content)]
    found: list[tuple[Key, Path, str]] = []
    for i, part in enumerate(content if isinstance(content, list) else ()):
        if isinstance(part, dict) and part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            found.append((("content", i), (holder, "content", i, "text"), part["text"]))
    return found


def _tool_calls(holder: str, calls: Any) -> list[tuple[Key, Path, str]]:
    found: list[tuple[Key, Path, str]] = []
    for position, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            index = call.get("index", position)
            key = ("tool_calls", index if isinstance(index, int) else position, "arguments")
            found.append((key, (holder, "tool_calls", position, "function", "arguments"), arguments))
    return found


def set_field(choice: dict[str, Any], path: Path, text: str) -> None:
    """Write ``text`` at ``path`` inside ``choice`` (a path ``fields`` gave for it)."""
    node: Any = choice
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = text


def texts(choice: Any) -> str:
    """All readable text of one complete choice, joined by blank lines (what a judge or a shadow rule reads)."""
    return "\n\n".join(text for _, _, text in fields(choice) if text)
