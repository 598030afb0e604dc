"""Sessions through the REST API: a real phone call read back turn by turn, a live call ended
from the API, and a date range of conversations exported as JSON lines and CSV."""

from __future__ import annotations

import csv
import io
import json

from api_helpers import api_client, new_key, poll

from mindbot.callsim import PhoneCall
from mindbot.harness import simulated_call, ws_url
from mindbot.speech import synthesize
from mindbot.standins import Text, TwilioRESTStandIn
from mindbot.storage import SessionRecord, TurnRecord

from conftest import wait_until

PHONE = "+15550107171"
ACCOUNT_SID = "AC" + "7" * 32


async def test_a_phone_call_is_read_back_through_the_api(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    bot = cloud_services.bot()
    try:
        reader = new_key(bot, ["read"], name="analytics")
        admin = new_key(bot, ["admin"], name="dpo")
        async with api_client(bot) as client:
            await simulated_call(
                ws_url(str(client.base_url).rstrip("/")),
                ["What is the capital of France?"],
                from_number=PHONE,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions)

            found = await client.post(
                "/api/v1/users/lookup", json={"identity": PHONE}, headers=reader
            )
            assert found.status_code == 200
            user = found.json()
            assert user["identities"] == [{"kind": "phone", "value": PHONE}]

            async def sessions():
                response = await client.get(
                    "/api/v1/sessions", params={"user_id": user["id"]}, headers=reader
                )
                return response.json()["items"]

            (listed,) = await poll(sessions, lambda items: items and items[0]["ended_at"])
            assert (listed["transport"], listed["persona"], listed["live"]) == (
                "twilio",
                "mindbot",
                False,
            )
            detail = (await client.get(f"/api/v1/sessions/{listed['id']}", headers=reader)).json()
            turns = detail["turns"]
            assert [t["role"] for t in turns] == ["assistant", "user", "assistant"]
            assert "capital of france" in turns[1]["text"].lower()
            assert turns[2]["text"] == "Paris is the capital of France."
            assert turns[2]["latency_secs"] > 0 and "speech synthesis" in turns[2]["stages"]
            assert detail["stats"]["turns"] == 3 and detail["end_reason"] == "completed"

            for params in (
                {"persona": "tutor"},
                {"since": "2999-01-01T00:00:00Z"},
                {"until": "2000-01-01T00:00:00+00:00"},
            ):
                filtered = await client.get("/api/v1/sessions", params=params, headers=reader)
                assert filtered.json()["items"] == [], params
            assert len((await client.get("/api/v1/sessions", headers=reader)).json()["items"]) == 1

            audit = (await client.get("/api/v1/audit", headers=admin)).json()
    finally:
        bot.stop()
    actions = {(row["action"], row["session_id"]) for row in audit}
    assert ("transcript.read", listed["id"]) in actions and ("user.read", None) in actions
    assert all(row["actor"] == "analytics" for row in audit)
    text = json.dumps(audit)
    assert PHONE not in text and "Paris" not in text and "capital" not in text.lower()


async def test_a_live_call_is_ended_through_the_api(cloud_services):
    async with TwilioRESTStandIn(account_sid=ACCOUNT_SID, auth_token="tw-secret") as twilio:
        bot = cloud_services.bot(
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token="tw-secret",
            twilio_api_base_url=twilio.base_url,
        )
        try:
            reader = new_key(bot, ["read"])
            writer = new_key(bot, ["write"], name="supervisor")
            async with api_client(bot) as client:
                base = str(client.base_url).rstrip("/")
                async with PhoneCall(ws_url(base), account_sid=ACCOUNT_SID) as call:
                    await call.wait_for_bot_speech(timeout=15)  # greeted: the session is live

                    async def live():
                        response = await client.get("/api/v1/sessions", headers=reader)
                        return [s for s in response.json()["items"] if s["live"]]

                    (session,) = await poll(live, bool)
                    end = f"/api/v1/sessions/{session['id']}/end"
                    assert (await client.post(end, headers=reader)).status_code == 403
                    ending = await client.post(end, headers=writer)
                    assert ending.status_code == 202
                    assert ending.json() == {"session_id": session["id"], "status": "ending"}
                    await wait_until(lambda: twilio.hangups, timeout=15)
                    assert twilio.hangups[0][0] == call.call_sid
                    await wait_until(lambda: not bot.active_sessions, timeout=15)

                again = await client.post(end, headers=writer)
                assert again.status_code == 409 and "not in progress" in again.json()["detail"]
                unknown = await client.post("/api/v1/sessions/nope/end", headers=writer)
                assert unknown.status_code == 404

                async def stored():
                    response = await client.get(f"/api/v1/sessions/{session['id']}", headers=reader)
                    return response.json()

                ended = await poll(stored, lambda s: s["ended_at"])
                assert ended["live"] is False and ended["end_reason"] in ("completed", "cancelled")
            (audit,) = bot.storage.access_audit(action="session.ended")
        finally:
            bot.stop()
    assert (audit.actor, audit.session_id) == ("supervisor", session["id"])


async def test_a_date_range_of_conversations_is_exported_page_by_page(cloud_services):
    bot = cloud_services.bot()
    try:
        storage = bot.storage
        user = storage.user_for_identity("phone", PHONE)
        for n in range(150):
            day = "2025-03-01" if n < 145 else "2025-04-01"
            storage.start_session(
                SessionRecord(
                    f"s{n:03}",
                    user.id,
                    "twilio",
                    "assistant",
                    "mindbot",
                    started_at=f"{day}T10:{n // 60:02}:{n % 60:02}+00:00",
                )
            )
            storage.add_turns(
                [
                    TurnRecord(f"s{n:03}", 0, "user", f"question {n}, with a comma"),
                    TurnRecord(f"s{n:03}", 1, "assistant", f"answer {n}", latency_secs=0.4),
                ]
            )
        admin = new_key(bot, ["admin"], name="warehouse")
        writer = new_key(bot, ["write"])
        march = {"since": "2025-03-01T00:00:00+00:00", "until": "2025-04-01T00:00:00+00:00"}
        async with api_client(bot) as client:
            jsonl = await client.get("/api/v1/conversations/export", params=march, headers=admin)
            assert jsonl.status_code == 200
            assert jsonl.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in jsonl.text.splitlines()]
            assert [s["id"] for s in lines] == [f"s{n:03}" for n in range(145)]  # pages of 100
            assert [t["text"] for t in lines[7]["turns"]] == [
                "question 7, with a comma",
                "answer 7",
            ]

            table = await client.get(
                "/api/v1/conversations/export", params={**march, "format": "csv"}, headers=admin
            )
            rows = list(csv.DictReader(io.StringIO(table.text)))
            assert len(rows) == 290 and rows[0]["text"] == "question 0, with a comma"
            assert rows[1]["latency_secs"] == "0.4" and rows[1]["user_id"] == str(user.id)

            everything = await client.get("/api/v1/conversations/export", headers=admin)
            assert len(everything.text.splitlines()) == 150
            refused = await client.get("/api/v1/conversations/export", headers=writer)
            assert refused.status_code == 403
            backwards = await client.get(
                "/api/v1/conversations/export",
                params={"since": march["until"], "until": march["since"]},
                headers=admin,
            )
            assert backwards.status_code == 422
            bad_format = await client.get(
                "/api/v1/conversations/export", params={"format": "xml"}, headers=admin
            )
            assert bad_format.status_code == 422
        audit = storage.access_audit(action="conversations.exported")
    finally:
        bot.stop()
    assert [row.detail["format"] for row in audit] == ["jsonl", "csv", "jsonl"]
    assert audit[-1].detail["since"] == "2025-03-01T00:00:00.000000+00:00"
    assert all(row.actor == "warehouse" and row.user_id is None for row in audit)


async def test_a_live_call_changes_voice_through_the_api(cloud_services, voice_cache):
    lady = "71a7ad14-091c-4e8e-a314-022ece01c121"  # British Reading Lady, in the catalog
    cloud_services.llm.script(Text("Here is my new voice."))
    bot = cloud_services.bot(memory=False)
    try:
        writer = new_key(bot, ["write"])
        async with api_client(bot) as client:
            base = str(client.base_url).rstrip("/")
            async with PhoneCall(ws_url(base)) as call:
                await call.wait_for_bot_speech(timeout=15)
                (live,) = bot.active_sessions
                voice = f"/api/v1/sessions/{live.session_id}/voice"
                bad = await client.post(voice, json={"voice": "Nobody At All"}, headers=writer)
                assert bad.status_code == 422 and "Nobody At All" in bad.json()["detail"]
                fast = await client.post(voice, json={"speed": 9}, headers=writer)
                assert fast.status_code == 422
                changed = await client.post(
                    voice, json={"voice": "the british reading lady", "speed": 1.2}, headers=writer
                )
                assert changed.status_code == 202, changed.text
                assert changed.json()["voice"] == lady

                pcm, rate = synthesize("What is your voice like now?", cache_dir=voice_cache)
                asked = await call.say(pcm, rate)
                await call.wait_for_bot_speech(after=asked, timeout=15)
            await wait_until(lambda: not bot.active_sessions, timeout=15)
            gone = await client.post(voice, json={"speed": 1.0}, headers=writer)
            assert gone.status_code in (404, 409)
    finally:
        bot.stop()
    spoken = [r for r in cloud_services.cartesia.requests if r.get("transcript", "").strip()]
    greeting = spoken[0]
    (reply,) = [r for r in spoken if "new voice" in r["transcript"]]
    assert greeting["voice"]["id"] != lady
    assert reply["voice"]["id"] == lady
    assert reply["generation_config"]["speed"] == 1.2
