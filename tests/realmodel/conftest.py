"""The local engine (llama-cpp-python's server with the packaged SmolLM2 model), started once for these tests.

scripts/test installs the engine (extra ``local``) and the model; here they are required, not optional: a
missing engine fails the tests rather than skipping them, so that CI cannot pass without talking to a real one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from config import JudgeLLMConfig, single_upstream
from config.gateway import GatewayConfig
from gateway.local_model import DEFAULT_MODEL, MODELS, Engine, Progress, engine_installed, install, start


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    if not engine_installed():
        pytest.fail("the local engine is not installed: scripts/test installs it (extra 'local')")
    model = MODELS[DEFAULT_MODEL]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = start(install(model, Progress()), model.name, model.file_sha256, port=port, context=4096, threads=2)
    yield running
    running.stop()


@pytest.fixture
def upstream_config(engine: Engine) -> GatewayConfig:
    """The gateway's configuration with the engine as its one upstream."""
    return single_upstream(engine.base_url)


@pytest.fixture
def judge_model(engine: Engine) -> JudgeLLMConfig:
    """The engine as the judge model (a 135M model judges badly: these tests check protocol, never scores)."""
    return JudgeLLMConfig(model=engine.name, base_url=engine.base_url, max_tokens=200, concurrency=2, timeout_s=300)
