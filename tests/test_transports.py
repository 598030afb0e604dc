"""Twilio's webhook and hang-up, Daily room creation, and the WebRTC signalling endpoints."""

import asyncio
import xml.etree.ElementTree as ET

import httpx
import pytest

from mindbot.callsim import PhoneCall
from mindbot.errors import ConfigError
from mindbot.harness import serve, ws_url
from mindbot.runtime import MindBot
from mindbot.server import create_daily_room
from mindbot.standins import DailyRESTStandIn, TwilioRESTStandIn
from pipelines.assistant import GOODBYE, run

from conftest import make_settings, wait_until

ACCOUNT_SID = "AC" + "1" * 32


async def test_the_twilio_webhook_answers_twiml_that_connects_a_media_stream(cloud_services):
    bot = cloud_services.bot(public_url="https://bot.example.com")
    try:
        async with serve(bot, run) as base_url, httpx.AsyncClient() as client:
            response = await client.post(
                f"{base_url}/twilio",
                data={"CallSid": "CA1", "From": "+15550100009", "To": "+15550100001"},
            )
    finally:
        bot.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://bot.example.com/ws"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters == {"from_number": "+15550100009", "to_number": "+15550100001"}


async def test_an_idle_caller_is_asked_then_hung_up_on_through_twilios_api(cloud_services):
    async with TwilioRESTStandIn(account_sid=ACCOUNT_SID, auth_token="tw-secret") as twilio:
        bot = cloud_services.bot(
            user_idle_secs=1.0,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token="tw-secret",
            twilio_api_base_url=twilio.base_url,
        )
        try:
            async with serve(bot, run) as base_url:
                async with PhoneCall(ws_url(base_url), account_sid=ACCOUNT_SID) as call:
                    await wait_until(lambda: twilio.hangups, timeout=20)
                    assert twilio.hangups[0][0] == call.call_sid
                    assert twilio.hangups[0][1]["Status"] == "completed"
        finally:
            bot.stop()
    spoken = [r.get("transcript", "") for r in cloud_services.cartesia.requests]
    assert any("still there" in text for text in spoken)
    assert any(GOODBYE in text for text in spoken)


async def test_without_twilio_credentials_the_bot_closes_the_stream_cleanly(cloud_services):
    bot = cloud_services.bot(user_idle_secs=1.0)
    try:
        async with serve(bot, run) as base_url:
            async with PhoneCall(ws_url(base_url)) as call:
                await asyncio.wait_for(call.closed.wait(), 20)
                assert call.close_code == 1000
    finally:
        bot.stop()


async def test_a_daily_room_is_created_through_dailys_rest_api():
    async with DailyRESTStandIn(api_key="daily-key") as daily:
        bot = MindBot(make_settings(daily_api_key="daily-key", daily_api_url=daily.api_url))
        room_url, token = await create_daily_room(bot)
    assert room_url == daily.rooms[0]["url"]
    assert token
    paths = [(method, path) for method, path, _ in daily.requests]
    assert ("POST", "/v1/rooms") in paths and ("POST", "/v1/meeting-tokens") in paths


async def test_a_given_daily_room_is_joined_without_creating_one():
    async with DailyRESTStandIn(api_key="daily-key") as daily:
        bot = MindBot(
            make_settings(
                daily_api_key="daily-key",
                daily_api_url=daily.api_url,
                daily_room_url="https://mindbot-test.daily.co/standup",
            )
        )
        room_url, token = await create_daily_room(bot)
    assert room_url == "https://mindbot-test.daily.co/standup"
    assert token and not daily.rooms


async def test_daily_without_a_key_or_room_is_a_clear_error():
    with pytest.raises(ConfigError, match="MINDBOT_DAILY_API_KEY"):
        await create_daily_room(MindBot(make_settings()))


async def test_webrtc_signalling_rejects_bad_requests_and_starts_sessions(cloud_services):
    bot = cloud_services.bot()
    try:
        async with serve(bot, run) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            assert (await client.get("/")).headers["location"] == "/client/"
            assert (await client.get("/client/")).status_code == 200
            started = await client.post("/start", json={"transport": "webrtc", "body": {}})
            session_id = started.json()["sessionId"]
            bad = await client.post(f"/sessions/{session_id}/api/offer", content=b"{not json")
            assert bad.status_code == 400
            missing = await client.post("/api/offer", json={"type": "offer"})
            assert missing.status_code == 400
            unknown = await client.post(
                "/sessions/nope/api/offer", json={"sdp": "", "type": "offer"}
            )
            assert unknown.status_code == 404
            assert (
                await client.post("/start", json={"transport": "carrier-pigeon"})
            ).status_code == 400
            assert (await client.get("/healthz")).json() == {"status": "ok", "active_sessions": 0}
    finally:
        bot.stop()
