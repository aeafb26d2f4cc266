"""Progress of long commands: plain lines when stderr is not a terminal, and every model call counted."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

from config import single_upstream
from judges.progress import Progress, shown
from tests.fakes.upstream import FakeUpstream, Json, chat_completion
from upstreams.client import ModelClient


def test_without_a_terminal_progress_is_plain_lines_with_count_share_and_rate() -> None:
    out = io.StringIO()
    progress = Progress("evaluate refusal", 40, "record", stream=out, every_s=0.0)
    for _ in range(40):
        progress.advance()
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 41 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[-1].startswith("evaluate refusal: 40/40 records (100 %), ") and "/s, " in lines[-1]


def test_every_model_call_made_in_the_context_advances_its_progress(
    fake_upstream: Callable[[], FakeUpstream],
) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", Json(chat_completion("fine")))

    async def calls() -> None:
        async with ModelClient(single_upstream(fake.url), "safety") as client:
            await asyncio.gather(*(client.chat("m", [{"role": "user", "content": "hi"}]) for _ in range(5)))

    with shown("probe safety", unit="call") as progress:
        asyncio.run(calls())
    assert progress.done == 5
    asyncio.run(calls())  # outside the context nothing is counted, nothing fails
    assert progress.done == 5
