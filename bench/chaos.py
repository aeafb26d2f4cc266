#!/usr/bin/env python3
"""The chaos run: steady traffic through a real gateway sampling every exchange into Redis, judged by two real
workers, while the pieces fail one after another. At the end it counts, from the request ids the clients got:
answered, sampled, evaluated, dropped (by reason, from the gateways' own counters and stop logs) and lost
(answered and sampled, never evaluated and never counted as dropped). It fails on any loss and on any drop the
buffer had room for (every drop in this run: the buffer is never full here).

Faults, in order (seconds after the traffic starts, for the default --scale 1):

- 6: Redis stopped for 2 s and started again (append-only file, fsync always): the gateway holds its samples;
- 14: a worker SIGKILLed while it holds a batch, and a new one started: the batch is reclaimed;
- 22: the gateway sent SIGTERM (it ships its buffer on the way out) and started again on the same port;
- 30: the upstream killed for 2 s and started again: its failed requests are answered 502 and not sampled;
- 38: a worker frozen for 6 s (SIGSTOP: a judge that hangs, heartbeat and all), then thawed: its batch is taken
  by the other worker and the frozen one carries on.

    .venv/bin/python bench/chaos.py [--rate 20] [--scale 1.0] [--json FILE]

Everything runs on loopback in a temporary directory; redis-server must be installed (scripts/test installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DROPPED = re.compile(r'^medic_gateway_samples_dropped_total\{reason="([a-z_]+)"\} ([0-9.e+]+)$', re.MULTILINE)
STOP_LOG = re.compile(r"stopping with (\d+) samples the queue did not take")
CONFIG = """\
upstreams: {{u: {{url: 'http://127.0.0.1:{upstream}/v1'}}}}
models: {{'*': {{routes: [{{upstream: u}}]}}}}
sampling: {{rate: 1.0, max_samples_per_s: 100000, drain_timeout_s: 5}}
queue: {{claim_idle_ms: 2000}}
results: {{sqlite_path: '{directory}/results.sqlite3'}}
worker: {{port: 0, judges: [refusal, fidelity]}}
"""


@dataclass
class Report:
    answered: int = 0  # requests answered 200 (each carries its request id)
    failed: int = 0  # requests answered otherwise or not at all (gateway restarting, upstream down)
    sampled: int = 0  # answered requests the gateway took a sample of (all of them: rate 1.0)
    evaluated: int = 0  # of those, the ones with stored results
    dropped: dict[str, int] = field(default_factory=dict)  # by reason, counted by the gateways
    lost: int = 0  # sampled, never evaluated, never counted as dropped
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and sum(self.dropped.values()) == 0 and self.answered > 0

    def lines(self) -> list[str]:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        return [
            f"faults: {'; '.join(self.faults)}",
            f"requests answered {self.answered}, failed {self.failed} (the gateway restarting, the upstream down)",
            f"sampled {self.sampled}, evaluated {self.evaluated}, dropped: {drops}, lost {self.lost}",
            f"{'PASS' if self.ok else 'FAIL'}: 0 lost and 0 avoidable drops required ({self.seconds:.0f} s)",
        ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, redis.RedisError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def http_get(port: int, path: str) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class Cluster:
    """redis-server, the fake upstream, one gateway and the workers, as processes in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis_port, self.upstream_port, self.gateway_port = free_port(), free_port(), free_port()
        self.config = directory / "gateway.yaml"
        self.config.write_text(CONFIG.format(upstream=self.upstream_port, directory=directory))
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis: subprocess.Popen[bytes] | None = None
        self.upstream: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_logs: list[Path] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.dropped: Counter[str] = Counter()

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian package redis-server)")
        self.redis = subprocess.Popen(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.redis_url)
        try:
            wait_for(lambda: bool(client.ping()), 10, "redis-server")
        finally:
            client.close()

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.send_signal(signal.SIGTERM)  # a clean stop: the append-only file is flushed
        self.redis.wait(10)

    def start_upstream(self) -> None:
        self.upstream = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(self.upstream_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: http_get(self.upstream_port, "/v1/models")[0] == 200, 10, "the fake upstream")

    def kill_upstream(self) -> None:
        assert self.upstream is not None
        self.upstream.kill()
        self.upstream.wait(10)

    def start_gateway(self) -> None:
        log = self.directory / f"gateway-{len(self.gateway_logs)}.log"
        self.gateway_logs.append(log)
        self.gateway = subprocess.Popen(
            [PYTHON, "-m", "gateway", "serve", "--config", str(self.config), "--redis-url", self.redis_url,
             "--port", str(self.gateway_port)],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=self.directory,
        )  # fmt: skip
        wait_for(lambda: http_get(self.gateway_port, "/readyz")[0] == 200, 30, "the gateway")

    def stop_gateway(self) -> None:
        """SIGTERM, after reading its drop counters (the process takes them with it)."""
        assert self.gateway is not None
        self.count_drops()
        self.gateway.send_signal(signal.SIGTERM)
        self.gateway.wait(60)
        self.dropped["shutdown"] += sum(int(n) for n in STOP_LOG.findall(self.gateway_logs[-1].read_text()))

    def count_drops(self) -> None:
        with contextlib.suppress(OSError):
            for reason, value in DROPPED.findall(http_get(self.gateway_port, "/metrics")[1]):
                self.dropped[reason] += int(float(value))

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [PYTHON, "-m", "gateway", "worker", "--config", str(self.config), "--redis-url", self.redis_url,
             "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def caught_holding_a_batch(self, worker: subprocess.Popen[bytes], timeout_s: float = 20) -> int:
        """Freeze ``worker`` (SIGSTOP) at a moment it holds samples it has read and not acknowledged; returns how
        many. It stays frozen: the caller kills or thaws it."""
        client = redis.Redis.from_url(self.redis_url)
        consumer = f"{socket.gethostname()}-{worker.pid}"
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                worker.send_signal(signal.SIGSTOP)
                with contextlib.suppress(redis.RedisError):
                    held = client.xpending_range("medic:samples", "judges", "-", "+", 1000, consumername=consumer)
                    if held:
                        return len(held)
                worker.send_signal(signal.SIGCONT)
                time.sleep(0.01)
        finally:
            client.close()
        raise RuntimeError("the worker never held a batch")

    def stop(self) -> None:
        for process in [*self.workers, self.gateway, self.upstream, self.redis]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)


class Traffic:
    """Requests at a steady rate from a thread: the request id of every 200, and a count of the rest."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.rate = port, rate
        self.ids: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import http.client

        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Is 40 mg of furosemide safe?"}]})
        connection: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += 1 / self.rate
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.ids.append(response.headers["x-request-id"])
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                if connection is not None:
                    connection.close()
                connection = None
            time.sleep(max(0.0, next_at - time.monotonic()))


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="medic-chaos-"))
    running = Cluster(directory)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run(rate: float = 20.0, scale: float = 1.0, log: Callable[[str], None] = print) -> Report:
    """The chaos run (see the module docstring); ``scale`` stretches or shrinks its schedule."""
    report = Report()
    started = time.monotonic()
    with cluster() as c:
        c.start_redis()
        c.start_upstream()
        c.start_gateway()
        c.start_worker()
        c.start_worker()
        traffic = Traffic(c.gateway_port, rate)
        traffic.start()

        def at(second: float, what: str) -> None:
            time.sleep(max(0.0, started + second * scale - time.monotonic()))
            report.faults.append(what)
            log(f"[chaos] {time.monotonic() - started:5.1f}s {what}")

        at(6, "Redis stopped for 2 s")
        c.stop_redis()
        time.sleep(2 * scale)
        c.start_redis()
        at(14, "a worker SIGKILLed holding a batch")
        held = c.caught_holding_a_batch(c.workers[0])
        c.workers[0].kill()
        c.workers[0].wait(10)
        report.faults[-1] += f" of {held}"
        c.start_worker()
        at(22, "the gateway sent SIGTERM and started again")
        c.stop_gateway()
        c.start_gateway()
        at(30, "the upstream killed for 2 s")
        c.kill_upstream()
        time.sleep(2 * scale)
        c.start_upstream()
        at(38, "a worker frozen for 6 s (SIGSTOP) holding a batch, then thawed")
        frozen = c.workers[1]
        report.faults[-1] += f" (it held {c.caught_holding_a_batch(frozen)})"
        time.sleep(6 * scale)
        frozen.send_signal(signal.SIGCONT)
        at(46, "traffic stopped")
        traffic.stop()
        c.count_drops()
        client = redis.Redis.from_url(c.redis_url)
        try:
            ids = list(traffic.ids)

            def evaluated() -> int:
                pipe = client.pipeline()
                for request_id in ids:
                    pipe.exists(f"medic:results:req:{request_id}")
                return sum(pipe.execute())

            deadline = time.monotonic() + 60
            while evaluated() < len(ids) - sum(c.dropped.values()) and time.monotonic() < deadline:
                time.sleep(0.5)
            report.evaluated = evaluated()
        finally:
            client.close()
        report.answered, report.failed = len(ids), traffic.failed
        report.sampled = len(ids)  # rate 1.0: every answered exchange is sampled
        report.dropped = {reason: n for reason, n in c.dropped.items() if n}
        report.lost = report.sampled - report.evaluated - sum(c.dropped.values())
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--scale", type=float, default=1.0, help="stretch the schedule (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    report = run(args.rate, args.scale)
    print("\n".join(report.lines()))
    if args.json:
        args.json.write_text(json.dumps(asdict(report) | {"ok": report.ok}, indent=1) + "\n", encoding="utf-8")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
