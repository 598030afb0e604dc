"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against the real
server: no data without a key; after a simulated phone call the session, its transcript (text,
emotion, sources, tool calls, stage latency bars) and the daily latency and cost charts are on
the page; a call placed while the page is open appears and ends without a reload; a revoked key
sends the operator back to the sign-in form. Screenshots go to tests/.artifacts/dashboard/."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from api_helpers import poll

from mindbot.api.auth import create_key
from mindbot.callsim import PhoneCall
from mindbot.harness import serve, simulated_call, ws_url
from mindbot.standins import Text, ToolCall, ToolCalls
from pipelines.assistant import run

from conftest import ARTIFACTS, wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ARTIFACTS / "dashboard"
CORPUS = Path(__file__).parent / "fixtures" / "kb" / "corpus"
CALLER = "+15550108181"
SECOND_CALLER = "+15550108282"
QUESTION = "What is the most I can spend on a hotel in Boston?"
REPLY = '<img src=x onerror="window.__xss=1"> The travel policy allows three hundred dollars.'
PRICES = {"llm": {"openai": {"prompt_per_million": 1.0, "completion_per_million": 4.0}}}


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian's chromium package)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python client is not installed"
    return None


@pytest.fixture
async def browser():
    """Debian's Chromium, headless, closed (with Playwright's driver) when the test ends."""
    if reason := browser_missing():
        print(f"skipping the dashboard browser test: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def shot(page, name: str, section: str | None = None) -> None:
    """Save the page (or one of its sections) as ``tests/.artifacts/dashboard/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if section:
        await page.locator(section).screenshot(path=path)
    else:
        await page.screenshot(path=path, full_page=True)


async def test_the_dashboard_shows_a_call_live_and_afterwards(cloud_services, voice_cache, browser):
    from playwright.async_api import expect

    cloud_services.llm.script(
        ToolCalls([ToolCall("calculate", {"expression": "300 * 2"})]), Text(REPLY)
    )
    bot = cloud_services.bot(memory=False, pricing=PRICES)
    try:
        kb = bot.knowledge_base("default", create=True)
        await asyncio.to_thread(kb.add, [CORPUS / "travel-policy.md"])
        key, record = create_key(bot.storage, "dashboard", ["read"], rate_per_minute=1000)
        auth = {"Authorization": f"Bearer {key}"}
        async with (
            serve(bot, run) as base_url,
            httpx.AsyncClient(base_url=base_url, headers=auth, timeout=30) as client,
        ):
            await simulated_call(
                ws_url(base_url),
                [QUESTION],
                from_number=CALLER,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions, timeout=15)

            async def sessions():
                return (await client.get("/api/v1/sessions")).json()["items"]

            (stored,) = await poll(sessions, lambda items: items and items[0]["ended_at"])
            detail = (await client.get(f"/api/v1/sessions/{stored['id']}")).json()
            today = datetime.now(UTC).date()
            span = {"since": str(today - timedelta(days=13)), "until": str(today)}
            daily = (await client.get("/api/v1/analytics/daily", params=span)).json()

            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            api_calls = []
            page.on("request", lambda r: "/api/" in r.url and api_calls.append(r))
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Without a key: a sign-in form, no data and not one API request.
            await page.goto(f"{base_url}/dashboard")
            await expect(page.locator("#api-key")).to_be_focused()
            await expect(page.locator("#app")).to_be_hidden()
            assert api_calls == [] and await page.locator("#app tbody tr").count() == 0
            await shot(page, "1-sign-in")

            await page.fill("#api-key", "mb_not-a-real-key")
            await page.press("#api-key", "Enter")
            await expect(page.locator("#login-error")).to_contain_text("Invalid API key")
            await expect(page.locator("#app")).to_be_hidden()

            # With the key: the call's session in the history.
            await page.fill("#api-key", key)
            await page.press("#api-key", "Enter")
            history = page.locator("#history-table tbody tr")
            await expect(history).to_have_count(1)
            await expect(history).to_contain_text("twilio")
            await expect(history).to_contain_text("completed")
            await expect(page.locator("#live-empty")).to_be_visible()
            assert key not in page.url and await page.evaluate("location.search") == ""
            for request in api_calls[1:]:  # the first carried the wrong key
                headers = await request.all_headers()
                assert headers["authorization"] == f"Bearer {key}" and key not in request.url

            # The transcript: every turn's text (the reply's markup as text), emotion, the KB
            # source, the tool call, and one latency bar per stage.
            await history.locator("button[data-session]").click()
            turns = page.locator("#turns > li")
            await expect(turns).to_have_count(len(detail["turns"]))
            for n, turn in enumerate(detail["turns"]):
                await expect(turns.nth(n).locator(".turn-text")).to_have_text(turn["text"])
                if turn["stages"]:
                    bars = turns.nth(n).locator("svg.stages rect.stage")
                    await expect(bars).to_have_count(len(turn["stages"]))
                if turn["emotion"]:
                    emotion = turns.nth(n).locator(".emotion")
                    await expect(emotion).to_contain_text(turn["emotion"]["label"])
            # The reply's markup was stored as the LLM wrote it and is shown as text.
            (answer,) = [t for t in detail["turns"] if t["text"].startswith("<img src=x onerror=")]
            assert answer["stages"] and answer["latency_secs"] > 0
            assert await page.locator("#turns img").count() == 0
            assert await page.evaluate("window.__xss") is None
            (used,) = [n for n, t in enumerate(detail["turns"]) if t["tool_calls"]]
            tools = turns.nth(used).locator("table.tools tbody tr")
            await expect(tools).to_have_count(1)
            await expect(tools).to_contain_text("calculate")
            await expect(tools.locator("td").nth(1)).to_have_text("ok")
            await expect(turns.nth(used).locator(".sources")).to_contain_text(
                "Business Travel Policy, section Nightly Rate Limits"
            )
            assert any(t["emotion"] for t in detail["turns"])
            await shot(page, "2-transcript", "#transcript")

            # Latency per day (one point per measured day and percentile) and cost per day.
            days = daily["days"]
            measured = [d for d in days if d["latency_p50"] is not None]
            assert len(days) == 14 and [d["day"] for d in measured] == [str(today)]
            await expect(page.locator("#latency-chart circle.point.p50")).to_have_count(1)
            await expect(page.locator("#latency-chart circle.point.p95")).to_have_count(1)
            bars = page.locator("#cost-chart rect.bar")
            await expect(bars).to_have_count(14)
            assert days[-1]["cost"] > 0
            today_bar = page.locator(f'#cost-chart rect.bar[data-day="{today}"]')
            assert float(await today_bar.get_attribute("height")) > 0
            yesterday = page.locator(f'#cost-chart rect.bar[data-day="{today - timedelta(1)}"]')
            assert float(await yesterday.get_attribute("height")) == 0
            await shot(page, "3-latency-and-cost", "#analytics")

            # The knowledge base's documents.
            documents = page.locator('#kb-collections [data-collection="default"] tbody tr')
            await expect(documents).to_have_count(1)
            await expect(documents).to_contain_text("Business Travel Policy")
            await expect(documents).to_contain_text("travel-policy.md")
            await shot(page, "4-knowledge-base", "#kb")

            # A call placed while the page is open appears, then ends, without a reload.
            await page.evaluate("window.__sameDocument = true")
            live = page.locator("#live-table tbody tr")
            async with PhoneCall(ws_url(base_url), from_number=SECOND_CALLER) as call:
                await call.wait_for_bot_speech(timeout=15)
                await expect(live).to_have_count(1, timeout=15_000)
                await expect(live).to_contain_text("twilio")
                live_id = await live.get_attribute("data-session")
                assert live_id and live_id != stored["id"]
                await expect(history.first).to_contain_text("live")
                await shot(page, "5-live", "#live")
            await expect(live).to_have_count(0, timeout=20_000)
            await expect(page.locator("#live-empty")).to_be_visible()
            await expect(history).to_have_count(2)
            await expect(history.first).not_to_contain_text("live")
            assert await page.evaluate("window.__sameDocument") is True

            # A revoked key: back to the sign-in form, with the reason and without the data.
            bot.storage.revoke_api_key(record.id)
            await expect(page.locator("#login-error")).to_contain_text("revoked", timeout=15_000)
            await expect(page.locator("#app")).to_be_hidden()
            assert await page.locator("#app tbody tr").count() == 0
            assert await page.locator("#turns > li").count() == 0
            assert await page.evaluate("sessionStorage.length") == 0
            await shot(page, "6-key-revoked")
            assert page_errors == []
    finally:
        bot.stop()


async def test_the_page_is_public_static_and_locked_down(cloud_services):
    bot = cloud_services.bot()
    try:
        async with serve(bot, run) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            redirect = await client.get("/dashboard")
            assert (redirect.status_code, redirect.headers["location"]) == (308, "dashboard/")
            page = await client.get("/dashboard/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert '<script src="dashboard.js" defer></script>' in page.text
            assert "http://" not in page.text and "https://" not in page.text  # nothing external
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "connect-src 'self'" in policy
            assert page.headers["x-content-type-options"] == "nosniff"
            script = await client.get("/dashboard/dashboard.js")
            assert script.headers["content-type"].startswith("text/javascript")
            assert "innerHTML" not in script.text and "Authorization" in script.text
            style = await client.get("/dashboard/dashboard.css")
            assert style.headers["content-type"].startswith("text/css")
            assert "@import" not in style.text and "url(" not in style.text
            for missing in ("/dashboard/secrets.env", "/dashboard/..%2Fapi%2Fapp.py"):
                assert (await client.get(missing)).status_code == 404
            assert "/dashboard/" not in (await client.get("/openapi.json")).text
    finally:
        bot.stop()
