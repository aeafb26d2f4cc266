"""Instructions per proxied request, counted by valgrind's callgrind: repeatable on a busy machine.

Runs the fake upstream, then the server under callgrind twice (200 and 1,200 sequential requests); the
difference divided by 1,000 cancels start-up out. Needs valgrind (Debian package `valgrind`).

    .venv/bin/python bench/instructions.py               # medic-gateway and the bare relay
"""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
SERVERS = {
    "medic-gateway": [PYTHON, "-m", "gateway"],
    "bare relay": [PYTHON, str(ROOT / "bench" / "bare_relay.py")],
}


def send(port: int, count: int) -> None:
    deadline = time.monotonic() + 600  # a start-up under valgrind on a busy machine takes minutes
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for _ in range(count):
        connection.request("POST", "/v1/chat/completions", BODY, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status


def count(command: list[str], upstream: str, port: int, requests: int, directory: str) -> int:
    out = f"{directory}/callgrind.{port}.{requests}"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command, "serve",
         "--upstream", upstream, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory,  # its results store starts empty
    )  # fmt: skip
    try:
        send(port, requests)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(600)
    match = re.search(r"^(?:summary|totals): (\d+)", Path(out).read_text(), re.MULTILINE)
    assert match, "callgrind wrote no total"
    return int(match.group(1))


def main() -> None:
    upstream = subprocess.Popen([PYTHON, str(ROOT / "bench" / "fake_upstream.py"), "--port", "9791"],
                                stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as directory:
            for port, (name, command) in enumerate(SERVERS.items(), start=9792):
                few = count(command, "http://127.0.0.1:9791/v1", port, 200, directory)
                many = count(command, "http://127.0.0.1:9791/v1", port, 1200, directory)
                print(f"{name}: {(many - few) // 1000:,} instructions per request", flush=True)
    finally:
        upstream.terminate()
    sys.exit(0)


if __name__ == "__main__":
    main()
