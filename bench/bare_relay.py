"""A bare relay, the floor of the gateway's stack: raw ASGI on uvicorn (httptools, uvloop) + aiohttp.

It reads the body, POSTs it to the upstream and returns the bytes: no auth, routing, retries, metrics or
streaming relay. The benchmark runs it in the gateway's place to show what the stack costs by itself:

    python bench/run.py --only direct,medic-gateway --no-stream --gateway-cmd ".venv/bin/python bench/bare_relay.py"
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


class Relay:
    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.session = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = (await receive())["body"]
        assert self.session is not None
        async with self.session.post(self.url, data=body, headers={"content-type": "application/json"}) as r:
            reply = await r.read()
            content_type = r.headers["content-type"].encode()
        headers = [(b"content-type", content_type), (b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(Relay(args.upstream), host=args.host, port=args.port, http="httptools", loop="uvloop",
                access_log=False, log_level="warning", proxy_headers=False)  # fmt: skip


if __name__ == "__main__":
    main()
