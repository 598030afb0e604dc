"""Bad input on the Twilio websocket: each is logged, that call ends, the server serves on."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from mindbot.callsim import PhoneCall
from mindbot.harness import serve, ws_url
from pipelines.assistant import run

from conftest import wait_until


async def _next_call_is_greeted(url: str) -> None:
    async with PhoneCall(url) as call:
        greeting = await call.wait_for_bot_speech(timeout=10, quiet=0)
        assert greeting.start > 0


@pytest.mark.parametrize(
    ("bad_message", "logged"),
    [
        ("this is not json{", "is not JSON"),
        (json.dumps([1, 2, 3]), "not a JSON object"),
        (json.dumps({"no_event": True}), "not a JSON object"),
    ],
)
async def test_a_malformed_message_ends_that_call_only(
    offline_bot, warnings_logged, bad_message, logged
):
    async with serve(offline_bot, run) as base_url:
        url = ws_url(base_url)
        async with PhoneCall(url) as call:
            await call.wait_for_bot_speech(timeout=10, quiet=0)
            await call.send_raw(bad_message)
            await asyncio.wait_for(call.closed.wait(), 10)
        await wait_until(lambda: not offline_bot.active_sessions)
        assert any(logged in message for _, message in warnings_logged), warnings_logged
        await _next_call_is_greeted(url)


async def test_an_unknown_event_is_logged_and_ignored(offline_bot, warnings_logged, voice_cache):
    async with serve(offline_bot, run) as base_url:
        async with PhoneCall(ws_url(base_url)) as call:
            await call.wait_for_bot_speech(timeout=10, quiet=0)
            await call.send_raw(json.dumps({"event": "teleport", "streamSid": call.stream_sid}))
            await asyncio.sleep(0.5)
            assert not call.closed.is_set()
        assert any("teleport" in message for _, message in warnings_logged)


async def test_a_huge_message_closes_the_call(offline_bot):
    async with serve(offline_bot, run) as base_url:
        url = ws_url(base_url)
        async with PhoneCall(url) as call:
            await call.wait_for_bot_speech(timeout=10, quiet=0)
            huge = json.dumps({"event": "media", "media": {"payload": "A" * 200_000}})
            await call.send_raw(huge)
            await asyncio.wait_for(call.closed.wait(), 10)
            assert call.close_code == 1009  # message too big
        await wait_until(lambda: not offline_bot.active_sessions)
        await _next_call_is_greeted(url)


@pytest.mark.parametrize(
    "handshake",
    [
        ["garbage"],
        [json.dumps({"event": "connected"}), json.dumps({"event": "start", "start": {}})],
        [json.dumps({"event": "connected"}), "[]"],
    ],
)
async def test_a_bad_handshake_is_refused(offline_bot, warnings_logged, handshake):
    async with serve(offline_bot, run) as base_url:
        url = ws_url(base_url)
        async with connect(url) as ws:
            for message in handshake:
                await ws.send(message)
            await asyncio.wait_for(ws.wait_closed(), 15)
            assert ws.close_code == 1008
        assert not offline_bot.active_sessions
        await _next_call_is_greeted(url)


async def test_an_abrupt_disconnect_ends_the_session(offline_bot):
    async with serve(offline_bot, run) as base_url:
        url = ws_url(base_url)
        call = PhoneCall(url)
        await call.connect()
        await call.wait_for_bot_speech(timeout=10, quiet=0)
        assert len(offline_bot.active_sessions) == 1
        call._ws.transport.abort()  # the TCP connection drops: no stop, no close frame
        await call.hangup()
        await wait_until(lambda: not offline_bot.active_sessions)
        await _next_call_is_greeted(url)
