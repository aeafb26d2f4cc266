"""A DEMO upstream for trying the gateway without a model server: canned, clearly labelled replies.

It speaks the OpenAI protocol (chat and text completions, streamed or not, embeddings, models) on a
loopback port chosen by the system. It is not a model and says so in every reply.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

MODEL = "demo-model"
REPLY = "[medic-gateway DEMO upstream] This is a canned reply, not a model. Start with --upstream URL."


class DemoUpstream:
    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        model = body.get("model", MODEL)
        usage = {"prompt_tokens": 12, "completion_tokens": len(REPLY.split()), "total_tokens": 12 + len(REPLY.split())}
        base = {"id": f"demo-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            choice |= {"message": {"role": "assistant", "content": REPLY}} if chat else {"text": REPLY}
            kind = "chat.completion" if chat else "text_completion"
            return web.json_response({**base, "object": kind, "choices": [choice], "usage": usage},
                                     dumps=lambda o: orjson.dumps(o).decode())  # fmt: skip
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        for i, word in enumerate(REPLY.split(" ")):
            piece = word if i == 0 else " " + word
            part: dict[str, Any] = {"delta": {"content": piece}} if chat else {"text": piece}
            chunk = {**base, "object": kind, "choices": [{"index": 0, "finish_reason": None, **part}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        last: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
        end = {**base, "object": kind, "choices": [{"index": 0, "finish_reason": "stop", **last}]}
        await response.write(b"data: " + orjson.dumps(end) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(
                b"data: " + orjson.dumps({**base, "object": kind, "choices": [], "usage": usage}) + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": _vector(str(text))} for i, text in enumerate(inputs)]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return web.json_response({"object": "list", "data": data, "model": body.get("model", MODEL), "usage": usage})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "medic-gateway-demo"}],
            }
        )


def _vector(text: str, size: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255, 4) for b in digest[:size]]
