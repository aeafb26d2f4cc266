"""The evidence page, against a real gateway whose embedded judges scored real exchanges and whose default policy
pack blocked one: what it shows, to whom, and what it never shows."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from config import GatewayConfig, PoliciesConfig, ResultsConfig, SamplingConfig, single_upstream
from pipeline.sample import Result
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream, Json, chat_completion

NOTE = (
    "Jane Roe, MRN 4471923, was seen on 2024-03-02. She has community-acquired pneumonia. "
    "Pathology confirms Mycoplasma pneumoniae is the causal organism. She was started on azithromycin 500 mg daily."
)
UNFAITHFUL = (
    "Jane Roe has community-acquired pneumonia. Pathology confirms Streptococcus pneumoniae is the causal organism. "
    "She was started on azithromycin 500 mg daily."
)
OVERDOSE = "For the pain, take 3000 mg of acetaminophen every 4 hours until it settles."
ADMIN = "sk-admin-page"


def basic(key: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"lead:{key}".encode()).decode()}


@pytest.fixture
def served(
    fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[GatewayServer, str, str]:  # fmt: skip
    """A gateway that has judged an unfaithful summary and blocked an overdose: (gateway, summary id, blocked id)."""
    monkeypatch.setenv("TEST_PAGE_ADMIN_KEY", ADMIN)
    fake = fake_upstream()
    config: GatewayConfig = single_upstream(fake.url).model_copy(update={
        "sampling": SamplingConfig(rate=1.0, max_samples_per_s=1000),
        "results": ResultsConfig(sqlite_path=str(tmp_path / "results.sqlite3"), admin_key_env="TEST_PAGE_ADMIN_KEY"),
        "policies": PoliciesConfig(audit_path=str(tmp_path / "audit.jsonl")),
    })  # fmt: skip
    gw = gateway(config)
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
    fake.script("/v1/chat/completions", Json(chat_completion(UNFAITHFUL)))
    summary = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": f"Summarise the following note:\n{NOTE}"}]
    ).headers["x-request-id"]
    fake.script("/v1/chat/completions", Json(chat_completion(OVERDOSE)))
    blocked = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "My knee hurts. What can I take?"}]
    ).headers["x-request-id"]
    http.eventually(lambda: http.request(gw.url, "GET", f"/evidence/{summary}", headers=basic(ADMIN)).status == 200,
                    15)  # fmt: skip
    return gw, summary, blocked


def page(gw: GatewayServer, path: str) -> str:
    response = http.request(gw.url, "GET", path, headers=basic(ADMIN))
    assert response.status == 200, response
    assert (response.header("content-type") or "").startswith("text/html")
    return response.body.decode()


def test_the_page_asks_for_the_admin_key_the_way_a_browser_can_answer(served: tuple[GatewayServer, str, str]) -> None:
    gw, _, _ = served
    anonymous = http.request(gw.url, "GET", "/evidence")
    assert anonymous.status == 401 and (anonymous.header("www-authenticate") or "").startswith("Basic")
    assert http.request(gw.url, "GET", "/evidence", headers=basic("sk-wrong")).status == 401
    bearer = http.request(gw.url, "GET", "/evidence", headers={"authorization": f"Bearer {ADMIN}"})
    assert bearer.status == 200
    assert http.request(gw.url, "POST", "/evidence", b"{}", headers=basic(ADMIN)).status == 405


def test_the_scorecard_lists_the_model_the_worst_exchange_and_the_block(served: tuple[GatewayServer, str, str]) -> None:
    gw, summary, blocked = served
    html = page(gw, "/evidence?window=1h")
    assert "fidelity_conformity" in html and "cef-lite/3" in html and "<td>m</td>" in html
    assert f'href="/evidence/{summary}"' in html  # the unfaithful summary is among the worst
    assert f'href="/evidence/{blocked}"' in html and "dose-above-max" in html  # the blocked overdose, with its rule
    assert http.request(gw.url, "GET", "/evidence?window=1y", headers=basic(ADMIN)).status == 400


def test_an_exchange_shows_the_changed_fact_and_never_an_identifier(served: tuple[GatewayServer, str, str]) -> None:
    gw, summary, blocked = served
    html = page(gw, f"/evidence/{summary}")
    assert "streptococcus" in html.lower() and "mycoplasma" in html.lower()  # the swap, as the judge read it
    assert "contradicted" in html
    decisions = page(gw, f"/evidence/{blocked}")
    assert "dose-above-max" in decisions and "block" in decisions
    for shown in (html, decisions, page(gw, "/evidence")):
        assert "Jane" not in shown and "Roe" not in shown and "4471923" not in shown and "2024-03-02" not in shown
    assert http.request(gw.url, "GET", "/evidence/no-such-request", headers=basic(ADMIN)).status == 404


async def test_evidence_is_escaped(served: tuple[GatewayServer, str, str]) -> None:
    gw, _, _ = served
    hostile = Result(request_id="r-<b>", indicator="fidelity_consistency", score=0.0, method="m/<i>", model="<img>",
                     evidence=[{"terms": ["<script>alert(1)</script>"]}], created_at=time.time())  # fmt: skip
    await gw.app.pipeline.store.put([hostile])
    html = page(gw, "/evidence/r-%3Cb%3E") + page(gw, "/evidence")
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img>" not in html
    assert json.dumps("<b>") not in html


def test_a_person_with_a_browser_finds_the_block_and_the_changed_fact(
    served: tuple[GatewayServer, str, str], tmp_path: Path
) -> None:
    """Playwright driving Debian's Chromium, headless: log in with the admin key as the password, read the
    scorecard, open the unfaithful summary from the list of worst exchanges. MEDIC_SCREENSHOTS=DIR keeps the
    screenshots (docs/images holds the ones in the README)."""
    import os
    import shutil

    from playwright.sync_api import sync_playwright

    gw, summary, _ = served
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "scripts/test installs Debian's chromium"
    shots = Path(os.environ.get("MEDIC_SCREENSHOTS") or tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(http_credentials={"username": "safety-lead", "password": ADMIN},
                                          viewport={"width": 1280, "height": 900})  # fmt: skip
            tab = context.new_page()
            tab.goto(f"{gw.url}/evidence")
            assert "m" in tab.locator("#scorecard").inner_text()
            assert "fidelity_conformity" in tab.locator("#scorecard").inner_text()
            blocks = tab.locator("#blocked").inner_text()
            assert "dose-above-max" in blocks and "block" in blocks
            tab.screenshot(path=str(shots / "evidence-overview.png"), full_page=True)
            overview_text = tab.locator("body").inner_text()
            tab.locator(f'#worst a[href="/evidence/{summary}"]').click()
            tab.wait_for_url(f"**/evidence/{summary}")
            evidence = tab.locator("body").inner_text()
            assert "contradicted" in evidence and "streptococcus" in evidence.lower()
            tab.screenshot(path=str(shots / "evidence-exchange.png"), full_page=True)
            for text in (overview_text, evidence):
                assert not any(secret in text for secret in ("Jane", "Roe", "4471923", "2024-03-02"))
        finally:
            browser.close()
    assert (shots / "evidence-overview.png").stat().st_size > 10_000
