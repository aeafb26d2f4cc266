"""The real gateway ASGI app served by a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable

import uvicorn

from config import GatewayConfig, PoliciesConfig, ResultsConfig
from gateway.app import Gateway
from gateway.tracing import Tracing
from judges.events import EvaluationEvents
from tests.fakes import http


class GatewayServer:
    def __init__(
        self, config: GatewayConfig, tracing: Tracing | None = None, redis_url: str | None = None,
        events: EvaluationEvents | None = None,
    ) -> None:  # fmt: skip
        if config.results.sqlite_path == ResultsConfig().sqlite_path:  # never write results into the work tree
            self._results_dir = tempfile.TemporaryDirectory(prefix="medic-results-")
            results = config.results.model_copy(update={"sqlite_path": f"{self._results_dir.name}/results.sqlite3"})
            config = config.model_copy(update={"results": results})
        if config.policies.audit_path == PoliciesConfig().audit_path:  # nor the policy audit log
            self._audit_dir = tempfile.TemporaryDirectory(prefix="medic-audit-")
            policies = config.policies.model_copy(update={"audit_path": f"{self._audit_dir.name}/audit.jsonl"})
            config = config.model_copy(update={"policies": policies})
        self.app = Gateway(config, tracing=tracing, redis_url=redis_url, events=events)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                http="httptools",  # as `medic-gateway serve` runs it
                lifespan="on",
                access_log=False,
                server_header=False,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name="gateway", daemon=True
        )

    @property
    def url(self) -> str:
        """Scheme, host and port: the root of the gateway."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI SDK takes as base_url."""
        return self.url + "/v1"

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.005)
        assert self.app.ready, "lifespan startup did not run"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def metrics(self) -> str:
        response = http.request(self.url, "GET", "/metrics")
        assert response.status == 200, response
        return response.body.decode()

    def metrics_when(self, check: Callable[[str], bool], timeout_s: float = 5.0) -> str:
        """The scrape once ``check(scrape)`` holds: a request is counted just after its last byte went out."""
        return http.eventually(lambda: text if check(text := self.metrics()) else "", timeout_s)
