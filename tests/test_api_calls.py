"""Starting calls through the REST API: the bot sent into a Daily room (and taken out again),
and an outbound Twilio call that the call simulator then answers, against the stand-ins."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from api_helpers import api_client, new_key

from mindbot.callsim import PhoneCall
from mindbot.harness import ws_url
from mindbot.standins import DailyRESTStandIn, TwilioRESTStandIn

from conftest import wait_until

ACCOUNT_SID = "AC" + "5" * 32
CALLEE = "+15550103030"
OUR_NUMBER = "+15550100002"


async def test_the_bot_is_sent_into_a_daily_room_and_taken_out_again(cloud_services):
    async with DailyRESTStandIn(api_key="daily-key") as daily:
        bot = cloud_services.bot(daily_api_key="daily-key", daily_api_url=daily.api_url)
        try:
            writer = new_key(bot, ["write"])
            async with api_client(bot) as client:
                unknown = await client.post(
                    "/api/v1/calls/daily", json={"persona": "nobody"}, headers=writer
                )
                assert unknown.status_code == 422 and "Unknown persona" in unknown.json()["detail"]
                started = await client.post(
                    "/api/v1/calls/daily",
                    json={"persona": "receptionist", "user_id": "daily-user-1"},
                    headers=writer,
                )
                assert started.status_code == 201, started.text
                assert started.json()["room_url"] == daily.rooms[0]["url"]
                session_id = started.json()["session_id"]
                await wait_until(
                    lambda: any(c.session_id == session_id for c in bot.active_sessions)
                )
                (call,) = bot.active_sessions
                assert (call.transport, call.persona, call.user_id) == (
                    "daily",
                    "receptionist",
                    "daily-user-1",
                )
                ending = await client.post(f"/api/v1/sessions/{session_id}/end", headers=writer)
                assert ending.status_code == 202
                # Offline, Daily's client gives up joining the room after about 19 s.
                await wait_until(lambda: not bot.active_sessions, timeout=40)
        finally:
            bot.stop()
    paths = [(method, path) for method, path, _ in daily.requests]
    assert ("POST", "/v1/rooms") in paths and ("POST", "/v1/meeting-tokens") in paths


async def test_daily_without_a_key_is_a_clear_503(cloud_services):
    bot = cloud_services.bot()
    try:
        writer = new_key(bot, ["write"])
        async with api_client(bot) as client:
            response = await client.post("/api/v1/calls/daily", json={}, headers=writer)
            assert response.status_code == 503
            assert "MINDBOT_DAILY_API_KEY" in response.json()["detail"]
            twilio = await client.post("/api/v1/calls/twilio", json={"to": CALLEE}, headers=writer)
            assert twilio.status_code == 503 and "TWILIO" in twilio.json()["detail"]
    finally:
        bot.stop()


async def test_an_outbound_twilio_call_connects_the_callee_to_the_bot(cloud_services):
    async with TwilioRESTStandIn(account_sid=ACCOUNT_SID, auth_token="tw-secret") as twilio:
        bot = cloud_services.bot(
            public_url="https://bot.example.com",
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token="tw-secret",
            twilio_api_base_url=twilio.base_url,
        )
        try:
            writer = new_key(bot, ["write"], name="dialer")
            async with api_client(bot) as client:
                for bad in ({"to": "555-0100"}, {"to": CALLEE, "from_number": "me"}, {}):
                    refused = await client.post("/api/v1/calls/twilio", json=bad, headers=writer)
                    assert refused.status_code == 422, bad
                no_from = await client.post(
                    "/api/v1/calls/twilio", json={"to": CALLEE}, headers=writer
                )
                assert no_from.status_code == 422 and "from_number" in no_from.json()["detail"]

                placed = await client.post(
                    "/api/v1/calls/twilio",
                    json={"to": CALLEE, "from_number": OUR_NUMBER, "persona": "tutor"},
                    headers=writer,
                )
                assert placed.status_code == 201, placed.text
                ((call_sid, form),) = twilio.created
                assert placed.json() == {"call_sid": call_sid, "status": "queued"}
                assert (form["To"], form["From"]) == (CALLEE, OUR_NUMBER)
                stream = ET.fromstring(form["Twiml"]).find("./Connect/Stream")
                assert stream is not None and stream.get("url") == "wss://bot.example.com/ws"
                parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
                assert parameters == {
                    "from_number": CALLEE,
                    "to_number": OUR_NUMBER,
                    "direction": "outbound",
                    "persona": "tutor",
                }

                # Twilio runs the TwiML once the callee answers: the simulator plays Twilio.
                base = str(client.base_url).rstrip("/")
                extra = {
                    k: v for k, v in parameters.items() if k not in ("from_number", "to_number")
                }
                async with PhoneCall(
                    ws_url(base),
                    from_number=CALLEE,
                    to_number=OUR_NUMBER,
                    custom_parameters=extra,
                    account_sid=ACCOUNT_SID,
                    call_sid=call_sid,
                ) as answered:
                    await answered.wait_for_bot_speech(timeout=15)
                    (session,) = bot.active_sessions
                    assert session.persona == "tutor" and session.from_number == CALLEE
            callee = bot.storage.find_user(CALLEE)
            assert callee is not None and session.stored_user_id == callee.id

            (audit,) = bot.storage.access_audit(action="call.placed")
            assert audit.actor == "dialer" and audit.detail == {"persona": "tutor"}
        finally:
            bot.stop()


async def test_a_call_twilio_refuses_is_a_502(cloud_services):
    async with TwilioRESTStandIn(account_sid=ACCOUNT_SID, auth_token="tw-secret") as twilio:
        bot = cloud_services.bot(
            public_url="https://bot.example.com",
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token="not-the-token",
            twilio_api_base_url=twilio.base_url,
            api={"twilio_from_number": OUR_NUMBER},
        )
        try:
            writer = new_key(bot, ["write"])
            async with api_client(bot) as client:
                response = await client.post(
                    "/api/v1/calls/twilio", json={"to": CALLEE}, headers=writer
                )
        finally:
            bot.stop()
    assert response.status_code == 502
    assert (
        response.json()["detail"] == "Twilio refused the call: HTTP 401, code 20003: Authenticate"
    )
    assert twilio.created == []
