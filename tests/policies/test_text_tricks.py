"""Text written to slip past the pack, sent through the gateway with the official SDK as the client and a real HTTP
fake upstream, whole and streamed: each is read as a reader reads it (text/normal.py) and blocked or redacted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from config import PoliciesConfig, single_upstream
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream, Json, Stream, chat_chunks, chat_completion

ASK = [{"role": "user", "content": "My knee hurts after a fall. What can I take?"}]
CHAT = "/v1/chat/completions"

OVERDOSES = {
    "zero-width in the number": "For the pain take 30\u200b00 mg of acetaminophen every 4 hours.",
    "zero-width in the drug": "For the pain take 3000 mg of acet\u200daminophen every 4 hours.",
    "cyrillic look-alikes in the drug": "For the pain take 3000 mg of \u0430c\u0435tamin\u043ephen every 4 hours.",
    "digits spaced": "For the pain take 3 0 0 0 mg of acetaminophen every 4 hours.",
    "full-width digits and unit": "For the pain take \uff13\uff10\uff10\uff10\uff4d\uff47 of acetaminophen every 4 "
    "hours.",
    "a number in words": "For the pain take fifteen grams of paracetamol at once.",
    "tablets counted": "For the pain take 30 paracetamol 500 mg tablets at once.",
    "drug named sentences before": "Acetaminophen works well for this. It is cheap. Many use it. Take 3000 mg every "
    "4 hours.",
}
LEAKS = {
    "identifier spaced": ("Her MRN is 4 4 5 5 6 6 7 and she is stable.", "4 4 5 5 6 6 7"),
    "identifier in words": ("Her MRN is four four five five six six seven and she is stable.", "four four"),
    "identifier with a zero-width space": ("Her MRN is 445\u200b5667 and she is stable.", "445\u200b5667"),
}


@pytest.fixture
def start(fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path):  # type: ignore[no-untyped-def]
    def started(answer: str, stream: bool, caller: str = ASK[0]["content"]) -> openai.OpenAI:
        fake = fake_upstream()
        pieces = [answer[i : i + 4] for i in range(0, len(answer), 4)]  # a real model's pace: 4 characters a token
        fake.script(CHAT, Stream(chat_chunks(pieces)) if stream else Json(chat_completion(answer)))
        config = single_upstream(fake.url).model_copy(
            update={"policies": PoliciesConfig(audit_path=str(tmp_path / "audit.jsonl"))})  # fmt: skip
        return openai.OpenAI(base_url=gateway(config).base_url, api_key="k", max_retries=0)

    return started


def streamed_text(client: openai.OpenAI, caller: str = ASK[0]["content"]) -> tuple[str, list[str]]:
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": caller}],
                                                 stream=True))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


@pytest.mark.parametrize("answer", OVERDOSES.values(), ids=OVERDOSES.keys())
def test_an_overdose_written_to_slip_past_is_withheld_whole(start, answer: str) -> None:  # type: ignore[no-untyped-def]
    completion = start(answer, stream=False).chat.completions.create(model="m", messages=ASK)
    assert [(c.finish_reason, c.message.content) for c in completion.choices] == [("content_filter", None)]


@pytest.mark.parametrize("answer", OVERDOSES.values(), ids=OVERDOSES.keys())
def test_an_overdose_written_to_slip_past_is_cut_in_a_stream(start, answer: str) -> None:  # type: ignore[no-untyped-def]
    text, reasons = streamed_text(start(answer, stream=True))
    assert reasons == ["content_filter"], text
    dose = answer[answer.index("at once") - 40 :] if "at once" in answer else answer[answer.index("every") - 30 :]
    assert not any(part in text for part in ("3000", "30\u200b00", "fifteen", "\uff13", "3 0 0 0")), text
    assert dose not in text


@pytest.mark.parametrize(("answer", "written"), LEAKS.values(), ids=LEAKS.keys())
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_identifier_written_to_slip_past_is_redacted(start, answer: str, written: str, stream: bool) -> None:  # type: ignore[no-untyped-def]
    client = start(answer, stream=stream)
    if stream:
        text, _ = streamed_text(client)
    else:
        text = client.chat.completions.create(model="m", messages=ASK).choices[0].message.content or ""
    assert written not in text and "[redacted]" in text and text.endswith("she is stable.")


def test_digits_inside_a_longer_number_of_the_callers_are_not_an_echo(start) -> None:  # type: ignore[no-untyped-def]
    caller = "Patient's account 944556671 needs an update. Summarise the visit."
    answer = "The patient, MRN 4455667, was seen today and is stable."
    client = start(answer, stream=False)
    sent = client.chat.completions.create(model="m", messages=[{"role": "user", "content": caller}])
    assert "4455667" not in json.dumps(sent.model_dump()) and "[redacted]" in (sent.choices[0].message.content or "")
