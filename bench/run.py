#!/usr/bin/env python3
"""Side-by-side overhead benchmark: direct vs medic-gateway vs LiteLLM proxy vs Portkey gateway.

All four setups sit in front of the same fast fake OpenAI-compatible upstream (bench/fake_upstream.py)
and are driven by wrk with the same Lua script (bench/chat.lua). Per setup it measures

  * serial latency: one connection, one wrk thread, sequential non-streaming
    POST /v1/chat/completions (p50/p99 from wrk's latency histogram);
  * serial streaming latency (stream: true) p50, time to the complete SSE response;
  * throughput: requests/s at 16 connections (2 wrk threads);
  * resident memory: summed VmRSS of the server's process tree, read from /proc after the load.

    python bench/run.py [--duration 10] [--only direct,medic-gateway,litellm,portkey]
    python bench/run.py --only direct,medic-gateway --no-stream --medec-body --gateway-args "--sample-rate 1.0"

--body FILE sends a JSON request body of your own instead of the small built-in one; --medec-body builds a
handover-summary request from MEDEC-MS at run time (and makes the fake upstream answer with a summary of
realistic length), which is what the embedded fidelity judge needs to have something to judge.

Missing tools are installed on first use: wrk with apt-get, LiteLLM into a virtualenv under
bench/.work/, the Portkey gateway with npm under bench/.work/. Results go to stdout as Markdown and
to bench/results/latest.md (plus a timestamped copy and latest.json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
LOGS = WORK / "logs"
LUA = BENCH / "chat.lua"
MODEL = "bench-model"

LITELLM_VENV = WORK / "litellm-venv"
PORTKEY_DIR = WORK / "portkey"
PORTKEY_ENTRY = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
PROJECT_VENV = ROOT / ".venv"
LITELLM_SPEC = "litellm[proxy]==1.106.2"
PORTKEY_VERSION = "1.15.2"
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.5", "hono": "4.9.7"}

# --medec-body: a handover-summary request built from MEDEC-MS (Ben Abacha et al., Findings of ACL 2025; CC BY 4.0)
MEDEC_CSV = ROOT / "corpora" / "medec" / "medec-ms-validation.csv"  # the packaged copy: run.py needs no install
MEDEC_PROMPT = "Summarise the following note for the handover.\n\nNote:\n"
# --medec-question: the same answer to a short question instead of the note (a 300-word answer to a question).
MEDEC_QUESTION = "What brought each of today's handover patients in? Give me their presenting histories."
# The note joins consecutive corrected notes until it has at least max(MEDEC_SOURCE_WORDS, 2 x the answer's words);
# the fake upstream's answer takes sentences of those notes until it has --medec-answer-words words (default 150).
MEDEC_SOURCE_WORDS = 300
MEDEC_ANSWER_WORDS = 150
# The text in a --gateway-config file that is replaced by the fake upstream's base URL.
UPSTREAM_PLACEHOLDER = "BENCH_UPSTREAM_URL"

# Targets for medic-gateway (from the performance issue).
TARGET_ADDED_P50_MS = 0.3
TARGET_OVER_RELAY_MS = 0.1  # added serial p50 over the bare relay's, same run
TARGET_X_LITELLM = 30.0
TARGET_X_PORTKEY = 3.0
TARGET_RSS_MB = 150.0

ALL_SETUPS = ["direct", "bare-relay", "medic-gateway", "litellm", "portkey"]

# CPU layouts (index into the usable CPUs): which CPU the server tree, the fake upstream and wrk run on.
# "split": the client on a CPU of its own, the system under test (gateway + its upstream) on the other, the same
# for every setup. Unpinned, serial latency is bimodal on a 2-vCPU VM: the direct p50 is ~0.02 ms when the
# scheduler happens to put wrk and the upstream on one CPU and ~0.07 ms when it does not.
LAYOUTS: dict[str, dict[str, int | None]] = {
    "split": {"server": 0, "upstream": 0, "client": 1},
    "dedicated": {"server": 0, "upstream": 1, "client": 1},
    "none": {"server": None, "upstream": None, "client": None},
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(cmd: list[str], **kw: object) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()  # type: ignore[call-overload, no-any-return]


def sh_quiet(cmd: list[str]) -> str:
    try:
        return sh(cmd)
    except (OSError, subprocess.CalledProcessError):
        return "?"


# --------------------------------------------------------------------------------------- installs


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk not found: installing it with apt-get (Debian/Ubuntu package 'wrk')")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is still missing after apt-get install")
    return path


def ensure_litellm(spec: str) -> Path:
    """A throwaway virtualenv with `spec` installed; reinstalled when the spec changes."""
    exe = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".bench-spec"
    if exe.exists() and marker.exists() and marker.read_text() == spec:
        return exe
    log(f"installing {spec!r} into {rel(LITELLM_VENV)} (a few minutes)")
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, spec], check=True)
    marker.write_text(spec)
    return exe


def ensure_portkey(version: str) -> Path:
    """@portkey-ai/gateway from npm, with the two server libraries pinned as in Portkey's own lockfile.

    Portkey declares `@hono/node-server ^1.3.3` and `hono ^4.9.7` but ships (package-lock.json, Docker
    image) @hono/node-server 1.13.5 and hono 4.9.7; with the newest @hono/node-server 1.19.x every
    streaming request fails (`TypeError: immutable` when Portkey appends its response headers).
    """
    pkg = {
        "name": "bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": version},
        "overrides": PORTKEY_OVERRIDES,
    }
    want = json.dumps(pkg, indent=2) + "\n"
    pj = PORTKEY_DIR / "package.json"
    if PORTKEY_ENTRY.exists() and pj.exists() and pj.read_text() == want:
        return PORTKEY_ENTRY
    if not shutil.which("npm"):
        sys.exit("npm is needed for the Portkey gateway (Debian: apt-get install -y nodejs npm)")
    log(f"installing @portkey-ai/gateway@{version} with npm into {rel(PORTKEY_DIR)}")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    pj.write_text(want)
    with contextlib.suppress(FileNotFoundError):
        (PORTKEY_DIR / "package-lock.json").unlink()
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=PORTKEY_DIR, check=True)
    return PORTKEY_ENTRY


# --------------------------------------------------------------------------------------- processes


def proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def proc_tree(pid: int) -> list[int]:
    kids = proc_children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(pid: int) -> tuple[float, float, int]:
    """(summed VmRSS, summed VmHWM peak, process count) of pid and its descendants."""
    pids = proc_tree(pid)
    rss = sum(status_kb(p, "VmRSS") for p in pids)
    hwm = sum(status_kb(p, "VmHWM") for p in pids)
    return rss / 1024, hwm / 1024, len(pids)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    logfile: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def spawn(
    name: str, cmd: list[str], cpus: str | None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Server:
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = LOGS / f"{name}.log"
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    log(f"start {name}: {' '.join(cmd)}")
    fh = open(logfile, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        cmd,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    fh.close()
    return Server(name, proc, logfile)


# --------------------------------------------------------------------------------------- HTTP checks


def http_req(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float = 10.0
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def chat_body(stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def medec_request(
    path: Path, answer_words: int = MEDEC_ANSWER_WORDS, question: bool = False
) -> tuple[dict[str, object], str, str]:
    """(request body, note, answer): a handover-summary request built from MEDEC-MS, and an answer to it; with
    ``question`` the request is MEDEC_QUESTION alone (the note is still returned: the answer is drawn from it).

    The note joins the corrected text of consecutive rows, from the first (one row per case), until it has
    max(MEDEC_SOURCE_WORDS, 2 x answer_words) words. The answer is an extractive summary of realistic length:
    sentences of those notes taken in turn (each note's first, then each note's second, ...) until it has
    answer_words words, kept in the notes' order.
    """
    source_words = max(MEDEC_SOURCE_WORDS, 2 * answer_words)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    notes: list[str] = []
    for row in rows:
        corrected = row["Corrected Text"].strip()
        text = corrected if corrected and corrected != "NA" else row["Text"].strip()
        if any(_same_case(text, n) for n in notes):
            continue  # MEDEC often has one case twice in a row (with and without an error): keep one
        notes.append(text)
        if len(" ".join(notes).split()) >= source_words:
            break
    note = "\n\n".join(notes)
    sentences = [re.split(r"(?<=[.!?])\s+", n) for n in notes]
    picked: set[tuple[int, int]] = set()
    words = 0
    for depth in range(max(len(x) for x in sentences)):
        for i, sents in enumerate(sentences):
            if depth < len(sents) and words < answer_words:
                picked.add((i, depth))
                words += len(sents[depth].split())
    answer = "\n\n".join(
        " ".join(sents[d] for d in range(len(sents)) if (i, d) in picked) for i, sents in enumerate(sentences)
    )
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": MEDEC_QUESTION if question else MEDEC_PROMPT + note}],
        "max_tokens": 400,
        "temperature": 0,
    }
    return body, note, answer.strip()


def _same_case(a: str, b: str) -> bool:
    """Two MEDEC notes are the same case when most of their words are shared."""
    wa, wb = set(a.lower().split()), set(b.lower().split())
    return len(wa & wb) >= 0.6 * min(len(wa), len(wb))


def prepare_bodies(args: argparse.Namespace) -> dict[bool, Path] | None:
    """The request body files wrk sends (non-streaming, streaming) for --body or --medec-body; None: built-in.

    --medec-body writes its request to bench/.work/medec-body.json and its answer to bench/.work/medec-answer.txt
    (the fake upstream's answer, complete and streamed, unless --answer-file is given). The body is re-serialised
    compactly, without "stream" for the non-streaming runs and with "stream": true for the streaming one.
    """
    args.body_note = ""
    if args.medec_body:
        body, note, answer = medec_request(Path(args.medec_data), args.medec_answer_words, args.medec_question)
        WORK.mkdir(parents=True, exist_ok=True)
        args.body = str(WORK / "medec-body.json")
        Path(args.body).write_text(json.dumps(body, indent=1) + "\n")
        if not args.answer_file:
            args.answer_file = str(WORK / "medec-answer.txt")
            Path(args.answer_file).write_text(answer)
        asked = f"{len(note.split())}-word note"
        if args.medec_question:
            asked = f"a {len(MEDEC_QUESTION.split())}-word question (the answer drawn from a {asked})"
        args.body_note = (
            f"MEDEC-MS handover summary request (Ben Abacha et al., Findings of ACL 2025; CC BY 4.0): "
            f"{asked}, {len(answer.split())}-word answer"
        )
    if not args.body:
        return None
    obj = json.loads(Path(args.body).read_text(encoding="utf-8"))
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        sys.exit(f"--body {args.body}: not a JSON chat completion request (an object with messages)")
    obj.pop("stream", None)
    WORK.mkdir(parents=True, exist_ok=True)
    files = {False: WORK / "body.json", True: WORK / "body-stream.json"}
    files[False].write_text(json.dumps(obj, separators=(",", ":")))
    files[True].write_text(json.dumps({**obj, "stream": True}, separators=(",", ":")))
    size = files[False].stat().st_size
    args.body_note = f"{rel(Path(args.body))}, {size:,} bytes" + (f"; {args.body_note}" if args.body_note else "")
    return files


def start_upstream(py: str, port: int, cpus: str | None, args: argparse.Namespace) -> Server:
    """The fake upstream; with --answer-file (or --medec-body) it answers with that text, complete and streamed."""
    cmd = [py, str(BENCH / "fake_upstream.py"), "--port", str(port)]
    if args.answer_file:
        cmd += ["--answer-file", str(Path(args.answer_file).resolve()), "--chunk-words", str(args.chunk_words)]
    if args.chunk_delay_ms:
        cmd += ["--chunk-delay-ms", str(args.chunk_delay_ms)]
    if args.answer_delay_ms:
        cmd += ["--answer-delay-ms", str(args.answer_delay_ms)]
    return spawn("fake-upstream", cmd, cpus)


def wait_ready(srv: Server, port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(
                f"{srv.name} exited with {srv.proc.returncode}; see {rel(srv.logfile)}:\n{tail(srv.logfile)}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, _ = http_req(port, "GET", path, None, {}, timeout=2)
            if status < 500:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{srv.name} not ready after {timeout:.0f}s; see {rel(srv.logfile)}:\n{tail(srv.logfile)}")


def tail(p: Path, n: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    return ""


def preflight(port: int, headers: dict[str, str], bodies: dict[bool, Path] | None = None) -> str:
    """One non-streaming and one streaming request must come back valid before anything is timed.

    Returns the non-streaming answer's `x-medic-policy` header (what a policy rule did to it), or "".
    """
    h = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench", **headers}

    def request_body(stream: bool) -> bytes:
        return bodies[stream].read_bytes() if bodies else chat_body(stream)

    status, body, rh = http_req(port, "POST", "/v1/chat/completions", request_body(False), h)
    if status != 200:
        raise RuntimeError(f"non-streaming preflight: HTTP {status}: {body[:500]!r}")
    policy = rh.get("x-medic-policy", "")
    obj = json.loads(body)
    if obj.get("object") != "chat.completion" or not obj.get("choices") or "usage" not in obj:
        raise RuntimeError(f"non-streaming preflight: unexpected body {body[:500]!r}")
    status, body, rh = http_req(port, "POST", "/v1/chat/completions", request_body(True), h)
    if status != 200:
        raise RuntimeError(f"streaming preflight: HTTP {status}: {body[:500]!r}")
    events = [ln[6:] for ln in body.decode().splitlines() if ln.startswith("data: ")]
    if not events or events[-1].strip() != "[DONE]" or "text/event-stream" not in rh.get("content-type", ""):
        raise RuntimeError(f"streaming preflight: not an SSE stream ending in [DONE]: {body[:500]!r}")
    return policy


# --------------------------------------------------------------------------------------- first content

CONTENT_RE = re.compile(rb'"content":\s*"(?!")')  # an SSE chunk whose delta carries text (not the role's "")


@dataclass
class FirstContent:
    """Serial streaming requests timed by a Python client: milliseconds from sending each request to the first byte
    of the response, to the first chunk that carries text, and to the end of the response."""

    first_byte_ms: list[float]
    first_content_ms: list[float]
    complete_ms: list[float]

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def first_content(
    port: int, body: bytes, headers: dict[str, str], count: int, cpu: str | None, warmup: int = 5
) -> FirstContent:
    """`count` sequential streaming requests (after `warmup` untimed ones) on one keep-alive connection, read
    with raw sockets as bytes arrive; the process runs on the client's CPU meanwhile."""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()
    request = head + body
    out = FirstContent([], [], [])
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(warmup + count):
                times = _one_stream(sock, request)
                if i >= warmup:
                    out.first_byte_ms.append(times[0])
                    out.first_content_ms.append(times[1])
                    out.complete_ms.append(times[2])
    finally:
        os.sched_setaffinity(0, before)
    return out


def _one_stream(sock: socket.socket, request: bytes) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    sock.sendall(request)
    buf = b""
    first_byte = first_text = -1.0
    end = length = -1
    while True:
        data = sock.recv(262144)
        now = time.perf_counter()
        if not data:
            raise RuntimeError("first-content client: the server closed the connection")
        first_byte = now if first_byte < 0 else first_byte
        buf += data
        if end < 0:
            end, length = _response_head(buf)
            if end < 0:
                continue
        if first_text < 0 and CONTENT_RE.search(buf, end):
            first_text = now
        if (length >= 0 and len(buf) >= end + 4 + length) or (length < 0 and buf.endswith(b"\r\n0\r\n\r\n")):
            break
    if first_text < 0:
        raise RuntimeError("first-content client: no chunk with text in the stream")
    return (first_byte - t0) * 1000, (first_text - t0) * 1000, (now - t0) * 1000


def _response_head(buf: bytes) -> tuple[int, int]:
    """(offset of the blank line ending the head, Content-Length or -1 when chunked); (-1, -1) while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return -1, -1
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"first-content client: {buf[:200]!r}")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", buf[:end].lower())
    return end, int(m.group(1)) if m else -1


# --------------------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    wrk: str,
    url: str,
    *,
    conns: int,
    threads: int,
    seconds: float,
    stream: bool,
    headers: dict[str, str],
    cpus: str | None,
    body_file: Path | None = None,
) -> WrkResult:
    env = {
        **os.environ,
        "BENCH_STREAM": "1" if stream else "0",
        "BENCH_MODEL": MODEL,
        "BENCH_HEADERS": "|".join(f"{k}: {v}" for k, v in headers.items()),
        "BENCH_BODY_FILE": str(body_file) if body_file else "",
    }
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no BENCH_RESULT line:\n{out}")
    r = json.loads(m.group(1))
    errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    return WrkResult(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1000, r["p99_us"] / 1000, r["non2xx"], errors)


# --------------------------------------------------------------------------------------- setups


@dataclass
class Setup:
    name: str
    label: str
    health_path: str = "/v1/models"
    headers: dict[str, str] = field(default_factory=dict)
    start: Callable[[int, str, str | None], Server] | None = None  # (port, upstream base url, cpus) -> Server
    version: Callable[[], str] = lambda: ""
    ready_timeout: float = 60.0
    notes: str = ""
    streams: bool = True  # whether the serial streaming run applies


def gateway_cmd(args: argparse.Namespace) -> list[str] | None:
    if args.gateway_cmd:  # paths relative to the repository, which the gateway does not run in
        return [str(ROOT / part) if (ROOT / part).exists() else part for part in str(args.gateway_cmd).split()]
    exe = PROJECT_VENV / "bin" / "medic-gateway"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("medic-gateway")
    return [found] if found else None


def relay_setup() -> Setup:
    def start_relay(port: int, upstream: str, cpus: str | None) -> Server:
        python = PROJECT_VENV / "bin" / "python"
        cmd = [str(python), str(ROOT / "bench" / "bare_relay.py"), "serve", "--upstream", upstream]
        return spawn("bare-relay", [*cmd, "--host", "127.0.0.1", "--port", str(port)], cpus)

    return Setup(
        "bare-relay",
        "bare relay (floor)",
        health_path="/healthz",
        start=start_relay,
        version=lambda: "bench/bare_relay.py: raw ASGI on uvicorn (httptools, uvloop) + aiohttp, no features",
        streams=False,
        notes="the floor of any Python gateway: reads the body, POSTs it upstream, returns the bytes",
    )


def make_setups(args: argparse.Namespace) -> dict[str, Setup]:
    s: dict[str, Setup] = {}

    s["direct"] = Setup("direct", "direct (no gateway)", version=lambda: "fake upstream (bench/fake_upstream.py)")

    s["bare-relay"] = relay_setup()

    def start_gateway(port: int, upstream: str, cpus: str | None) -> Server:
        cmd = gateway_cmd(args)
        if cmd is None:
            raise RuntimeError("medic-gateway CLI not found: run `pip install -e .` in the project venv (.venv)")
        extra = args.gateway_args.split() if args.gateway_args else []
        source = ["--upstream", upstream]
        if args.gateway_config:
            cfg = WORK / "gateway-config.yaml"
            cfg.write_text(Path(args.gateway_config).read_text().replace(UPSTREAM_PLACEHOLDER, upstream))
            source = ["--config", str(cfg)]
        # A directory of its own, emptied first: the embedded results store (medic-results.sqlite3) starts empty
        # in every run instead of growing with the runs before it.
        home = WORK / "gateway-home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        return spawn(
            "medic-gateway",
            [*cmd, "serve", *source, "--host", "127.0.0.1", "--port", str(port), *extra],
            cpus,
            cwd=home,
        )

    def gateway_version() -> str:
        cmd = gateway_cmd(args)
        py = PROJECT_VENV / "bin" / "python"
        ver = (
            sh_quiet([str(py), "-c", "import importlib.metadata as m; print(m.version('medic-gateway'))"])
            if py.exists()
            else "?"
        )
        rev = sh_quiet(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = sh_quiet(["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway"])
        rev = rev if rev != "?" else "no commit"
        return f"medic-gateway {ver} (git {rev}{', gateway/ modified' if dirty not in ('', '?') else ''})" + (
            "" if cmd else " [CLI missing]"
        )

    s["medic-gateway"] = Setup(
        "medic-gateway",
        "medic-gateway",
        health_path="/healthz",
        start=start_gateway,
        version=gateway_version,
        ready_timeout=60,
    )

    def start_litellm(port: int, upstream: str, cpus: str | None) -> Server:
        exe = ensure_litellm(args.litellm_spec)
        cfg = WORK / "litellm-config.yaml"
        cfg.write_text(
            "# generated by bench/run.py: one model, routed to the fake upstream as an OpenAI-compatible backend\n"
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: {upstream}\n"
            "      api_key: sk-bench\n"
            "litellm_settings:\n"
            "  set_verbose: false\n"
            "  request_timeout: 600\n"
        )
        env = {
            "LITELLM_MASTER_KEY": "sk-bench",  # required since 1.8x; the client sends it as its bearer token
            "LITELLM_LOG": "ERROR",  # production docs: log errors only
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch of the cost map at start
            "LITELLM_MODE": "PRODUCTION",  # do not read a .env file
        }
        cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        return spawn("litellm", cmd, cpus, env=env, cwd=WORK)

    def litellm_version() -> str:
        py = LITELLM_VENV / "bin" / "python"
        if not py.exists():
            return "litellm (not installed)"
        v = sh_quiet([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
        uv = sh_quiet([str(py), "-c", "import importlib.metadata as m; print(m.version('uvicorn'))"])
        return f"litellm[proxy] {v} (uvicorn {uv}, {sh_quiet([str(py), '-V'])})"

    s["litellm"] = Setup(
        "litellm",
        "LiteLLM proxy",
        health_path="/health/liveliness",
        start=start_litellm,
        version=litellm_version,
        ready_timeout=240,
        notes="1 worker (uvicorn), no database, master key sk-bench (required to start); LITELLM_LOG=ERROR",
    )

    def start_portkey(port: int, upstream: str, cpus: str | None) -> Server:
        entry = ensure_portkey(args.portkey_version)
        # --headless: no web UI / log-stream routes; NODE_ENV=production is the normal Node deployment mode.
        return spawn(
            "portkey",
            ["node", str(entry), f"--port={port}", "--headless"],
            cpus,
            env={"NODE_ENV": "production"},
            cwd=PORTKEY_DIR,
        )

    def portkey_version() -> str:
        pj = PORTKEY_ENTRY.parent.parent / "package.json"
        v = json.loads(pj.read_text())["version"] if pj.exists() else "(not installed)"
        pins = ", ".join(f"{k} {v}" for k, v in PORTKEY_OVERRIDES.items())
        return f"@portkey-ai/gateway {v} (node {sh_quiet(['node', '--version'])}; {pins} as in its lockfile)"

    s["portkey"] = Setup(
        "portkey",
        "Portkey gateway",
        health_path="/",
        start=start_portkey,
        version=portkey_version,
        ready_timeout=60,
        notes="x-portkey-provider: openai + x-portkey-custom-host; --headless, NODE_ENV=production",
    )
    return s


# --------------------------------------------------------------------------------------- main


@dataclass
class Row:
    setup: Setup
    serial: WrkResult | None = None
    baseline: WrkResult | None = None  # direct serial run taken right before this setup's serial run
    stream: WrkResult | None = None
    load: WrkResult | None = None
    rss_mb: float | None = None
    peak_mb: float | None = None
    nprocs: int = 0
    metrics: list[str] = field(default_factory=list)  # --gateway-metrics lines of /metrics after the load
    first: FirstContent | None = None  # --first-content: serial streams timed by a Python client
    policy: str = ""  # x-medic-policy header of the preflight's non-streaming answer
    error: str = ""


def measure(
    setup: Setup, args: argparse.Namespace, wrk: str, upstream_port: int, upstream_url: str, cpus: dict[str, str | None]
) -> Row:
    """Start the setup's server (if any), check it answers correctly, time it, read its memory, stop it."""
    row = Row(setup)
    srv: Server | None = None
    try:
        port = upstream_port
        if setup.start is not None:
            port = free_port()
            srv = setup.start(port, upstream_url, cpus["server"])
            wait_ready(srv, port, setup.health_path, setup.ready_timeout)
        headers = dict(setup.headers)
        if setup.name == "portkey":
            headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": upstream_url}
        row.policy = preflight(port, headers, args.body_files)
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions" if srv is not None else None
        run_phases(row, args, wrk, f"http://127.0.0.1:{port}/v1/chat/completions", headers, cpus["client"], direct_url)
        if srv is not None:
            row.rss_mb, row.peak_mb, row.nprocs = tree_rss_mb(srv.proc.pid)
            if setup.name == "medic-gateway" and args.gateway_metrics:
                row.metrics = scrape_metrics(port, args.gateway_metrics.split(","))
            if srv.proc.poll() is not None:
                raise RuntimeError(f"{setup.name} exited during the run; see {rel(srv.logfile)}")
        for name, r in (("serial", row.serial), ("stream", row.stream), ("load", row.load)):
            if r and (r.non2xx or r.errors):
                row.error += f"{name}: {r.non2xx} non-2xx, {r.errors} socket errors; "
    except Exception as e:  # one failing setup must not sink the others
        row.error = f"{type(e).__name__}: {e}"
        log(f"{setup.name} FAILED: {row.error}")
    finally:
        if srv is not None:
            srv.stop()
    return row


SERIAL_IN_ROUNDS = ("bare-relay", "medic-gateway")  # the setups whose added serial p50 the rounds also time


def round_measure(
    setup: Setup, args: argparse.Namespace, wrk: str, upstream_url: str, cpus: dict[str, str | None]
) -> tuple[float | None, float | None]:
    """One alternating round's measure of a setup: start it, warm it up, its requests/s at the load, and (for the
    relay and the gateway) its serial p50 less the direct path's just before it; stop it."""
    assert setup.start is not None
    port = free_port()
    srv = setup.start(port, upstream_url, cpus["server"])
    try:
        wait_ready(srv, port, setup.health_path, setup.ready_timeout)
        headers = dict(setup.headers)
        if setup.name == "portkey":
            headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": upstream_url}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = (args.body_files or {}).get(False)
        for seconds in (args.warmup, args.duration):
            result = run_wrk(wrk, url, conns=args.connections, threads=args.threads, seconds=seconds, stream=False,
                             headers=headers, cpus=cpus["client"], body_file=body)  # fmt: skip
        rps = None if result.non2xx or result.errors else result.rps
        added = None
        if setup.name in SERIAL_IN_ROUNDS:
            direct = upstream_url.rstrip("/") + "/chat/completions"
            timed = [run_wrk(wrk, u, conns=1, threads=1, seconds=args.serial_duration, stream=False, headers=h,
                             cpus=cpus["client"], body_file=body)
                     for u, h in ((direct, {}), (url, headers))]  # fmt: skip
            if not any(r.non2xx or r.errors for r in timed):
                added = timed[1].p50_ms - timed[0].p50_ms
        return rps, added
    except Exception as e:  # a failed round is left out, and said
        log(f"{setup.name} round FAILED: {type(e).__name__}: {e}")
        return None, None
    finally:
        srv.stop()


@dataclass
class Rounds:
    rps: dict[str, list[float | None]]  # requests/s of each setup, round by round
    added: dict[str, list[float | None]]  # serial p50 over the direct path's, ms (SERIAL_IN_ROUNDS only)


def alternate(
    names: list[str], rounds: int, setups: dict[str, Setup], args: argparse.Namespace, wrk: str, upstream_url: str,
    cpus: dict[str, str | None],
) -> Rounds:  # fmt: skip
    """Each setup measured in ``rounds`` rounds, the order rotated each round so that a drift of the machine
    falls on every setup alike: the ratios and differences are taken within a round."""
    found = Rounds({name: [] for name in names}, {name: [] for name in names if name in SERIAL_IN_ROUNDS})
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        log(f"=== round {number + 1} of {rounds}: {', '.join(order)}")
        for name in order:
            rps, added = round_measure(setups[name], args, wrk, upstream_url, cpus)
            found.rps[name].append(rps)
            if name in found.added:
                found.added[name].append(added)
    return found


def rounds_report(rounds: Rounds | None) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """The rounds' table, and as targets the medians of the Portkey ratio and of the gateway's serial p50 over the
    relay's."""
    if rounds is None:
        return [], []
    found = rounds.rps
    n = max(len(v) for v in found.values())
    lines = ["", f"## Alternating rounds ({n}: the setups' order rotated each round)", ""]
    lines += ["| setup | " + " | ".join(f"round {i + 1}" for i in range(n)) + " | median |",
              "|---|" + "---:|" * (n + 1)]  # fmt: skip
    for name, values in found.items():
        known = [v for v in values if v is not None]
        median = statistics.median(known) if known else None
        cells = " | ".join("failed" if v is None else f"{v:,.0f}" for v in values)
        lines.append(f"| {name} req/s | {cells} | {'—' if median is None else f'{median:,.0f}'} |")
    targets = []
    gateway = found.get("medic-gateway", [])
    others = (("portkey", TARGET_X_PORTKEY, "Portkey gateway"), ("litellm", TARGET_X_LITELLM, "LiteLLM proxy"),
              ("bare-relay", None, "the relay"))  # fmt: skip
    for other, mult, label in others:
        ratios = [g / o for g, o in zip(gateway, found.get(other, []), strict=False) if g and o]
        if not ratios:
            continue
        cells = " | ".join(f"{r:.1f}x" if r >= 10 else f"{r:.2f}x" for r in ratios)
        median = statistics.median(ratios)
        lines.append(f"| gateway / {label} req/s | {cells} | **{median:.2f}x** |")
        if mult is not None:
            measured = f"median {median:.2f}x of {len(ratios)} rounds ({min(ratios):.2f}x to {max(ratios):.2f}x)"
            targets.append((f"req/s vs {other}, rounds", f"req/s >= {mult:g}x {label}, alternating rounds",
                            measured, _verdict(median >= mult)))  # fmt: skip
    gw_added, relay_added = rounds.added.get("medic-gateway", []), rounds.added.get("bare-relay", [])
    over = [g - r for g, r in zip(gw_added, relay_added, strict=False) if g is not None and r is not None]
    if over:
        for name, values in (("bare-relay", relay_added), ("medic-gateway", gw_added)):
            cells = " | ".join("failed" if v is None else f"{v:+.3f}" for v in values)
            known = [v for v in values if v is not None]
            lines.append(f"| {name} serial p50 over direct, ms | {cells} | {statistics.median(known):+.3f} |")
        median = statistics.median(over)
        cells = " | ".join(f"{v:+.3f}" for v in over)
        lines.append(f"| gateway over the relay, ms | {cells} | **{median:+.3f}** |")
        measured = f"median {median:+.3f} ms of {len(over)} rounds ({min(over):+.3f} to {max(over):+.3f})"
        targets.append(("p50 vs relay, rounds", f"added serial p50 over the bare relay's <= {TARGET_OVER_RELAY_MS} "
                        "ms, alternating rounds", measured, _verdict(median <= TARGET_OVER_RELAY_MS)))  # fmt: skip
    return lines, targets


def scrape_metrics(port: int, prefixes: list[str]) -> list[str]:
    """The samples of the server's /metrics whose names start with one of `prefixes`."""
    status, body, _ = http_req(port, "GET", "/metrics", None, {})
    if status != 200:
        return [f"GET /metrics: HTTP {status}"]
    wanted = tuple(x.strip() for x in prefixes if x.strip())
    return [ln for ln in body.decode().splitlines() if ln.startswith(wanted)]


def run_phases(
    row: Row,
    args: argparse.Namespace,
    wrk: str,
    url: str,
    headers: dict[str, str],
    cpus: str | None,
    direct_url: str | None,
) -> None:
    """Warm-up, serial (with a same-moment direct baseline), serial streaming, then the concurrent load."""
    name = row.setup.name
    bodies: dict[bool, Path] = args.body_files or {}

    def serial(u: str, h: dict[str, str], stream: bool = False) -> WrkResult:
        return run_wrk(
            wrk,
            u,
            conns=1,
            threads=1,
            seconds=args.serial_duration,
            stream=stream,
            headers=h,
            cpus=cpus,
            body_file=bodies.get(stream),
        )

    log(f"{name}: warm-up {args.warmup:.0f}s")
    run_wrk(
        wrk,
        url,
        conns=args.connections,
        threads=args.threads,
        seconds=args.warmup,
        stream=False,
        headers=headers,
        cpus=cpus,
        body_file=bodies.get(False),
    )
    log(f"{name}: serial {args.serial_duration:.0f}s")
    if direct_url:
        # The direct serial latency measured just before, so that "added p50" compares like with like
        # even if the machine's state drifts during the run.
        row.baseline = serial(direct_url, {})
    row.serial = serial(url, headers)
    if not args.no_stream and row.setup.streams:
        log(f"{name}: serial streaming {args.serial_duration:.0f}s")
        row.stream = serial(url, headers, stream=True)
        if args.first_content:
            log(f"{name}: {args.first_content} streams timed to their first byte and first text")
            body = bodies[True].read_bytes() if bodies else chat_body(True)
            port = urllib.parse.urlsplit(url).port or 80
            row.first = first_content(port, body, headers, args.first_content, cpus)
    log(f"{name}: {args.connections} connections {args.duration:.0f}s")
    row.load = run_wrk(
        wrk,
        url,
        conns=args.connections,
        threads=args.threads,
        seconds=args.duration,
        stream=False,
        headers=headers,
        cpus=cpus,
        body_file=bodies.get(False),
    )


def fmt_ms(v: float | None) -> str:
    return "—" if v is None else (f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def compute_targets(by: dict[str, Row]) -> list[tuple[str, str, str, str]]:
    """medic-gateway's targets as (short name, target, measured, PASS/FAIL/n/a)."""
    gw, direct = by.get("medic-gateway"), by.get("direct")
    if gw is None:
        return []
    out = []
    d50 = direct_p50(gw, direct)
    added = gw.serial.p50_ms - d50 if gw.serial and d50 is not None else None
    out.append(
        (
            "p50",
            f"added serial p50 over direct <= {TARGET_ADDED_P50_MS} ms",
            "—" if added is None else f"{added:+.3f} ms",
            _verdict(None if added is None else added <= TARGET_ADDED_P50_MS),
        )
    )
    relay = by.get("bare-relay")
    if relay is not None and relay.serial and gw.serial:
        r50 = direct_p50(relay, direct)
        over = (gw.serial.p50_ms - d50) - (relay.serial.p50_ms - r50) if d50 is not None and r50 is not None else None
        out.append(
            (
                "p50 vs relay",
                f"added serial p50 over the bare relay's <= {TARGET_OVER_RELAY_MS} ms",
                "—" if over is None else f"{over:+.3f} ms",
                _verdict(None if over is None else over <= TARGET_OVER_RELAY_MS),
            )
        )
    g_rps = gw.load.rps if gw.load and not gw.error else None
    for other, mult, label in (
        ("litellm", TARGET_X_LITELLM, "LiteLLM proxy"),
        ("portkey", TARGET_X_PORTKEY, "Portkey gateway"),
    ):
        o = by.get(other)
        o_rps = o.load.rps if o and o.load and not o.error else None
        x = g_rps / o_rps if g_rps is not None and o_rps else None
        measured = "—" if x is None else f"{x:.1f}x ({g_rps:,.0f} vs {o_rps:,.0f})"
        out.append(
            (f"req/s vs {other}", f"req/s >= {mult:g}x {label}", measured, _verdict(None if x is None else x >= mult))
        )
    rss = gw.rss_mb
    out.append(
        (
            "RSS",
            f"resident memory <= {TARGET_RSS_MB:g} MB",
            "—" if rss is None else f"{rss:.0f} MB",
            _verdict(None if rss is None else rss <= TARGET_RSS_MB),
        )
    )
    return out


def summarize_targets(targets: list[tuple[str, str, str, str]]) -> str:
    if not targets:
        return ""
    summary = f"{sum(t[3] == 'PASS' for t in targets)}/{len(targets)} PASS"
    missed = [f"{t[0]} {t[3]}" for t in targets if t[3] != "PASS"]
    return summary + (" (" + ", ".join(missed) + ")" if missed else "")


def direct_p50(r: Row, direct: Row | None) -> float | None:
    """The baseline for r's added latency: its own same-moment direct run, else the direct row's."""
    if r.baseline:
        return r.baseline.p50_ms
    return direct.serial.p50_ms if direct and direct.serial else None


def table_row(r: Row, direct: Row | None, tcol: str) -> str:
    if r.error and not (r.serial and r.load):
        return f"| {r.setup.label} | error | | | | | | | {r.error[:120].replace('|', '/')} |"
    d50 = direct_p50(r, direct)
    ds50 = direct.stream.p50_ms if direct and direct.stream else None
    is_direct = r.setup.name == "direct"
    added = "—"
    if r.serial and d50 is not None and not is_direct:
        added = f"{r.serial.p50_ms - d50:+.2f} ms" + (f" (direct {d50:.2f})" if r.baseline else "")
    st = fmt_ms(r.stream.p50_ms) if r.stream else "—"
    if r.stream and ds50 is not None and not is_direct:
        st += f" ({r.stream.p50_ms - ds50:+.2f})"
    st99 = fmt_ms(r.stream.p99_ms) if r.stream else "—"
    rss = f"{r.rss_mb:.0f} MB" if r.rss_mb is not None else "— (upstream only)"
    if r.error:
        tcol = (tcol + " ⚠ " + r.error).strip()
    rps = f"{r.load.rps:,.0f}" if r.load else "—"
    p50 = fmt_ms(r.serial.p50_ms if r.serial else None)
    p99 = fmt_ms(r.serial.p99_ms if r.serial else None)
    return f"| {r.setup.label} | {p50} | {p99} | {added} | {st} | {st99} | {rps} | {rss} | {tcol} |"


def first_content_table(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """--first-content: p50 (p99) of the Python client's serial streams, per setup."""
    timed = [r for r in rows if r.first]
    if not timed:
        return []
    delay = f", fake upstream {args.chunk_delay_ms:g} ms before each chunk" if args.chunk_delay_ms else ""
    lines = [
        "",
        f"## Streaming: first byte and first text ({args.first_content} serial streams, Python client{delay})",
        "",
        "Milliseconds from sending the request to the first byte of the response, to the first SSE chunk with text "
        "(a non-empty `delta.content`), and to the end of the response; p50 (p99).",
        "",
        "| setup | first byte | first text | complete |",
        "|---|---|---|---|",
    ]
    for r in timed:
        f = r.first
        assert f is not None
        cells = [
            f"{fmt_ms(f.pct(v, 0.5))} ({fmt_ms(f.pct(v, 0.99))})"
            for v in (f.first_byte_ms, f.first_content_ms, f.complete_ms)
        ]
        lines.append(f"| {r.setup.label} | {' | '.join(cells)} |")
    return lines


def build_report(
    rows: list[Row], args: argparse.Namespace, versions: dict[str, str], env_lines: list[str],
    rounds: Rounds | None = None,
) -> tuple[str, dict[str, object]]:  # fmt: skip
    by = {r.setup.name: r for r in rows}
    round_lines, round_targets = rounds_report(rounds)
    targets = compute_targets(by) + round_targets
    gw_summary = summarize_targets(targets)
    lines = [
        f"# medic-gateway benchmark — {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        "Fake upstream: bench/fake_upstream.py. Client: wrk + bench/chat.lua. "
        f"Serial = 1 connection, 1 thread, {args.serial_duration:.0f} s; "
        f"load = {args.connections} connections, {args.threads} threads, {args.duration:.0f} s "
        f"(after a {args.warmup:.0f} s warm-up). RSS = summed VmRSS of the server's process tree after the load. "
        "Added p50 = setup p50 minus a direct serial p50 measured just before it (in brackets). "
        "Stream p50 = serial, time to the complete SSE response (`stream: true`), added over direct in brackets."
        + (f" Request body: {args.body_note}." if args.body_note else "")
        + (f" Fake upstream's answer: {rel(Path(args.answer_file))}." if args.answer_file else "")
        + (f" It holds a complete answer back {args.answer_delay_ms:g} ms." if args.answer_delay_ms else ""),
        "",
        f"| setup | serial p50 | serial p99 | added p50 vs direct | stream p50 | stream p99 | "
        f"req/s @{args.connections} conns | RSS | targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(r, by.get("direct"), gw_summary if r.setup.name == "medic-gateway" else "") for r in rows]
    lines += first_content_table(rows, args)
    lines += round_lines
    if targets:
        lines += ["", "## medic-gateway targets", "", "| target | measured | result |", "|---|---|---|"]
        lines += [f"| {b} | {c} | {d} |" for _, b, c, d in targets]
    lines += ["", "## Versions and environment", ""]
    lines += [f"- {k}: {v}" for k, v in versions.items()]
    lines += [f"- {x}" for x in env_lines]
    notes = [f"- {r.setup.label}: {r.setup.notes}" for r in rows if r.setup.notes]
    notes += [
        f"- {r.setup.label}: peak RSS (summed VmHWM) {r.peak_mb:.0f} MB over {r.nprocs} process(es)"
        for r in rows
        if r.peak_mb
    ]
    notes += [f"- {r.setup.label}: preflight answer had `x-medic-policy: {r.policy}`" for r in rows if r.policy]
    if notes:
        lines += ["", "## Notes", "", *notes]
    for r in rows:
        if r.metrics:
            lines += ["", f"## {r.setup.label}: /metrics after the load ({args.gateway_metrics})", "", "```"]
            lines += [*r.metrics, "```"]
    lines.append("")
    data: dict[str, object] = {
        "rows": [
            {
                "setup": r.setup.name,
                "serial_p50_ms": r.serial.p50_ms if r.serial else None,
                "serial_p99_ms": r.serial.p99_ms if r.serial else None,
                "baseline_direct_p50_ms": r.baseline.p50_ms if r.baseline else None,
                "stream_p50_ms": r.stream.p50_ms if r.stream else None,
                "stream_p99_ms": r.stream.p99_ms if r.stream else None,
                "first_content": vars(r.first) if r.first else None,
                "policy_header": r.policy,
                "rps": r.load.rps if r.load else None,
                "rss_mb": r.rss_mb,
                "peak_rss_mb": r.peak_mb,
                "metrics": r.metrics,
                "error": r.error,
            }
            for r in rows
        ],
        "targets": [{"target": b, "measured": c, "result": d} for _, b, c, d in targets],
        "versions": versions,
        "environment": env_lines,
        "args": vars(args),
    }
    return "\n".join(lines), data


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (from /proc/stat), measured while the benchmark is idle."""

    def snap() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f), idle

    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def cpu_seconds_user_system() -> float:
    """CPU seconds spent in user, nice and system mode on all CPUs since boot (irq/softirq/steal left out)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and its reaped children (servers, fake upstream, wrk)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def environment(args: argparse.Namespace, cpus: dict[str, str | None], wrk: str) -> list[str]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu_model = m.group(1) if m else "?"
    if args.layout == "none":
        pin = "none (the kernel places client, server and upstream on any CPU)"
    else:
        pin = (
            f"--layout {args.layout}: server process tree on CPU {cpus['server']}, "
            f"fake upstream on CPU {cpus['upstream']}, wrk on CPU {cpus['client']} (taskset)"
        )
    busy = getattr(args, "background_busy", None)
    foreign = getattr(args, "foreign_busy", None)
    return [
        f"machine: {os.cpu_count()} CPUs ({cpu_model}), Linux {platform.release()}",
        f"background CPU use just before the run: {busy:.0f}%"
        + (" — other work was running; numbers are less trustworthy" if busy is not None and busy > 10 else ""),
        f"CPU used by processes outside the benchmark during the run: {foreign:.0f}% of the machine"
        + (" — numbers are less trustworthy" if foreign is not None and foreign > 5 else ""),
        f"CPU pinning: {pin}",
        f"command: python {' '.join([rel(Path(sys.argv[0])), *sys.argv[1:]])}",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds of the 16-connection load per setup (default 10)"
    )
    p.add_argument("--serial-duration", type=float, default=5.0, help="seconds of each serial run (default 5)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load before measuring (default 2)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads for the load run (default 2)")
    p.add_argument("--only", default=",".join(ALL_SETUPS), help=f"comma-separated subset of {','.join(ALL_SETUPS)}")
    p.add_argument("--no-stream", action="store_true", help="skip the serial streaming run")
    p.add_argument(
        "--rounds", type=int, default=5, metavar="N",
        help="after the main pass, N alternating rounds of --round-setups (the order rotated each round): requests/s "
        "of each, serial p50 of the relay and the gateway; the Portkey and LiteLLM ratios and the serial p50 over the "
        "relay are then also judged on their medians over the rounds, as this machine's speed drifts (default 5; 0: "
        "none)",
    )  # fmt: skip
    p.add_argument("--round-setups", default="bare-relay,medic-gateway,portkey,litellm", help="the rounds' setups")
    p.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="split",
        help="CPU pinning with taskset: split (default) = server and fake upstream on CPU 0, wrk on CPU 1; "
        "dedicated = server alone on CPU 0, upstream and wrk on CPU 1; none = no pinning",
    )
    p.add_argument(
        "--gateway-cmd", default="", help="command that starts medic-gateway (default: .venv/bin/medic-gateway)"
    )
    p.add_argument("--gateway-args", default="", help="extra arguments appended to `medic-gateway serve ...`")
    p.add_argument(
        "--litellm-spec", default=LITELLM_SPEC, help=f"pip requirement for LiteLLM (default {LITELLM_SPEC!r})"
    )
    p.add_argument(
        "--portkey-version", default=PORTKEY_VERSION, help=f"@portkey-ai/gateway version (default {PORTKEY_VERSION})"
    )
    p.add_argument(
        "--output", default=str(RESULTS / "latest.md"), help="Markdown report path (default bench/results/latest.md)"
    )
    body = p.add_mutually_exclusive_group()
    body.add_argument(
        "--body",
        default="",
        metavar="FILE",
        help="JSON chat completion request sent by every timed request instead of the small built-in one",
    )
    body.add_argument(
        "--medec-body",
        action="store_true",
        help=f"send a handover-summary request of a ~{MEDEC_SOURCE_WORDS}-word note built from MEDEC-MS at run "
        f"time, and have the fake upstream answer with a ~{MEDEC_ANSWER_WORDS}-word summary (what fidelity judges)",
    )
    p.add_argument(
        "--medec-question",
        action="store_true",
        help="--medec-body: ask a short question instead of sending the note (the answer stays the same)",
    )
    p.add_argument("--medec-data", default=str(MEDEC_CSV), help=f"MEDEC-MS CSV (default {rel(MEDEC_CSV)})")
    p.add_argument(
        "--medec-answer-words",
        type=int,
        default=MEDEC_ANSWER_WORDS,
        metavar="N",
        help=f"--medec-body: words of the fake upstream's summary (default {MEDEC_ANSWER_WORDS}); the note has at "
        f"least max({MEDEC_SOURCE_WORDS}, 2N) words",
    )
    p.add_argument(
        "--chunk-words",
        type=int,
        default=4,
        metavar="N",
        help="words per streamed chunk of the --answer-file / --medec-body answer (default 4)",
    )
    p.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="the fake upstream waits this long before each streamed chunk (default 0)",
    )
    p.add_argument(
        "--answer-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="the fake upstream waits this long before a complete (non-streamed) answer, as a model takes time to "
        "write one (default 0)",
    )
    p.add_argument(
        "--first-content",
        type=int,
        default=0,
        metavar="N",
        help="after the serial streaming run, time N serial streams with a Python client to their first byte, "
        "first chunk with text and end (default 0: off)",
    )
    p.add_argument(
        "--answer-file",
        default="",
        metavar="FILE",
        help="text the fake upstream answers with, complete and streamed in chunks of --chunk-words words "
        "(default: its short built-in answer)",
    )
    p.add_argument(
        "--gateway-config",
        default="",
        metavar="FILE",
        help=f"start medic-gateway with `serve --config` on this YAML instead of `--upstream`; "
        f"{UPSTREAM_PLACEHOLDER} in it is replaced by the fake upstream's base URL",
    )
    p.add_argument(
        "--gateway-metrics",
        default="",
        metavar="PREFIXES",
        help="comma-separated metric name prefixes: those lines of medic-gateway's /metrics, read right after the "
        "load, go into the report (e.g. medic_judges_results_total)",
    )
    args = p.parse_args()
    args.body_files = prepare_bodies(args)

    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL_SETUPS)
    if unknown:
        p.error(f"unknown setups {sorted(unknown)}; choose from {ALL_SETUPS}")
    if "direct" not in only:
        only.insert(0, "direct")  # the baseline is always measured
    only = [x for x in ALL_SETUPS if x in only]

    wrk = ensure_wrk()
    args.background_busy = cpu_busy_percent(2.0)
    if args.background_busy > 10:
        log(
            f"WARNING: the CPUs are already {args.background_busy:.0f}% busy before the benchmark starts; "
            "results will be noisy (stop other work for trustworthy numbers)"
        )
    # Install up front so that install time never overlaps a measurement.
    if "litellm" in only:
        ensure_litellm(args.litellm_spec)
    if "portkey" in only:
        ensure_portkey(args.portkey_version)

    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2 and args.layout != "none":
        log(f"only {len(usable)} usable CPU: no pinning")
        args.layout = "none"
    cpus = {role: (None if cpu is None else str(usable[cpu])) for role, cpu in LAYOUTS[args.layout].items()}

    setups = make_setups(args)
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    py = sys.executable
    if (PROJECT_VENV / "bin" / "python").exists() and subprocess.run(
        [py, "-c", "import uvloop"], capture_output=True
    ).returncode != 0:
        py = str(PROJECT_VENV / "bin" / "python")  # has uvloop: a faster fake upstream
    upstream = start_upstream(py, upstream_port, cpus["upstream"], args)
    rows: list[Row] = []
    t0, sys0, own0 = time.monotonic(), cpu_seconds_user_system(), own_cpu_seconds()
    try:
        wait_ready(upstream, upstream_port, "/v1/models", 20)
        for name in only:
            log(f"=== {name}")
            rows.append(measure(setups[name], args, wrk, upstream_port, upstream_url, cpus))
        names = [x.strip() for x in args.round_setups.split(",") if x.strip() in setups and x.strip() != "direct"]
        rounds = alternate(names, args.rounds, setups, args, wrk, upstream_url, cpus) if args.rounds else None
        up_rss = tree_rss_mb(upstream.proc.pid)[0]
    finally:
        upstream.stop()
    wall = time.monotonic() - t0
    foreign_s = (cpu_seconds_user_system() - sys0) - (own_cpu_seconds() - own0)
    args.foreign_busy = max(0.0, 100.0 * foreign_s / (wall * len(os.sched_getaffinity(0))))

    versions = {s.label: s.version() for s in (setups[n] for n in only)}
    versions["fake upstream"] = (
        f"{sh_quiet([py, '-V'])}"
        + (
            " + uvloop " + sh_quiet([py, "-c", "import uvloop; print(uvloop.__version__)"])
            if subprocess.run([py, "-c", "import uvloop"], capture_output=True).returncode == 0
            else " (asyncio)"
        )
        + f", {up_rss:.0f} MB RSS at the end"
    )
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True)  # exits 1 after printing its version
    versions["wrk"] = ((wrk_v.stdout or wrk_v.stderr).splitlines() or ["?"])[0].split(" Copyright")[0]
    report, data = build_report(rows, args, versions, environment(args, cpus, wrk), rounds)
    print(report)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if out.parent == RESULTS:
        (RESULTS / f"{stamp}.md").write_text(report)
        (RESULTS / "latest.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    log(f"wrote {rel(out)}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
