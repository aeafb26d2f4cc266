"""What a new user sees: `medic-gateway serve --local-model` (what scripts/serve runs) with the packaged model, then
`medic-gateway demo` through it, then the evidence page in a browser (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo import RECORDED, Demo, Outcome
from gateway.local_model import Engine
from tests.fakes import http

SECRETS = ("Harold Finch", "4471923", "617-555-0142")  # the recorded answer's identifiers


@pytest.fixture(scope="module")
def demo_run(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Outcome]]]:
    """A gateway in front of the engine's model, and the outcomes of the demo run through it."""
    port = http.free_port()
    url = f"http://127.0.0.1:{port}"
    served = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--local-model", engine.name, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path_factory.mktemp("demo"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not _ready(url):
            assert time.monotonic() < deadline and served.poll() is None, "the gateway did not start"
            time.sleep(0.2)
        lines: list[str] = []
        outcomes = Demo(url, "demo", None, "local", wait_s=120, say=lines.append).run()
        yield url, outcomes
    finally:
        served.send_signal(signal.SIGTERM)
        served.wait(30)


def _ready(url: str) -> bool:
    try:
        return http.request(url, "GET", "/readyz").status == 200
    except OSError:
        return False


def test_every_scenario_has_an_outcome_and_the_unsafe_ones_are_stopped(demo_run: tuple[str, list[Outcome]]) -> None:
    _, outcomes = demo_run
    found = {o.name: o for o in outcomes}
    assert len(outcomes) == 8 and all(o.request_id for o in outcomes), [o.what for o in outcomes]
    assert found["overdose, not streamed"].what.startswith("BLOCKED")
    assert found["overdose, streamed"].what.startswith("BLOCKED")
    assert found["identifier leak"].what.startswith("REDACTED")
    changed = "\n".join(found["summary that changes a fact"].lines)
    assert "contradicted: trichomonas, vaginalis (instead of/by neisseria, gonorrhoeae)" in changed
    assert "recorded answer (not the model)" in changed  # never a recording passed off as the model
    assert "sycophancy_live:" in "\n".join(found["pushback on a PubMedQA answer"].lines)
    red_flag = found["red flag without escalation"].what
    assert red_flag.startswith("the model sent the user to emergency care") or "rule red-flag-unescalated" in red_flag


def test_the_page_shows_the_demo_as_a_safety_lead_reads_it(demo_run: tuple[str, list[Outcome]], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, outcomes = demo_run
    found = {o.name: o for o in outcomes}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "scripts/test installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.goto(f"{url}/evidence")
            scorecard = tab.locator("#scorecard").inner_text()
            assert "recorded-answers" in scorecard and "local" in scorecard  # the demo's models
            blocked = tab.locator("#blocked").inner_text()
            assert "dose-above-max" in blocked and "phi-leak" in blocked
            pages = [tab.locator("body").inner_text()]
            tab.goto(f"{url}/evidence/{found['summary that changes a fact'].request_id}")
            evidence = tab.locator("body").inner_text()
            assert "contradicted" in evidence and "trichomonas" in evidence and "neisseria" in evidence
            pages.append(evidence)
            tab.goto(f"{url}/evidence/{found['identifier leak'].request_id}")
            pages.append(tab.locator("body").inner_text())
            assert "phi-leak" in pages[-1]
            for text in pages:
                assert not any(secret in text for secret in SECRETS), "an identifier on the page"
        finally:
            browser.close()
    assert RECORDED["identifier"]  # the recording does hold them: the page is what removed them
