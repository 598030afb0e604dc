"""Analytics and cost: a real phone call shows up in today's figures, priced; exact arithmetic
over sessions written through Storage's own methods (percentiles, tool success, emotion trend,
cost, UTC days across midnight, erased users' usage); the API's contract, errors and keys."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from api_helpers import api_client, new_key, poll

from mindbot.analytics import FIELDS, Analytics, date_range, halves, nearest_rank, parse_day
from mindbot.harness import simulated_call, ws_url
from mindbot.pricing import PricingSettings, TokenPrice
from mindbot.standins import Text
from mindbot.storage import SessionRecord, SQLiteStorage, TurnRecord, UsageRecord

from conftest import wait_until

PRICES = PricingSettings(
    currency="EUR",
    llm={"openai": TokenPrice(prompt_per_million=1.0, completion_per_million=2.0)},
    tts={"cartesia": 30.0},  # per million characters
    stt={"deepgram": 0.01},  # per minute
)
ONE, TWO, GONE = "+15550108801", "+15550108802", "+15550108803"
MARCH = (date(2025, 3, 1), date(2025, 3, 3))


def at(moment: str) -> str:
    """A UTC time as storage writes it."""
    return datetime.fromisoformat(moment).replace(tzinfo=UTC).isoformat(timespec="microseconds")


def turn(session_id, idx, role, moment, **fields) -> TurnRecord:
    return TurnRecord(session_id, idx, role, f"turn {idx}", at(moment), at(moment), **fields)


def feeling(label: str, valence: float) -> dict:
    return {"label": label, "valence": valence, "arousal": 0.5, "confidence": 0.9}


def usage(session_id, moment, service, provider, model=None, *tokens, **amounts) -> UsageRecord:
    return UsageRecord(session_id, at(moment), service, provider, model, *tokens, **amounts)


def write_march(storage) -> dict[str, int]:
    """Three sessions on 1-2 March 2025 (one across midnight, one still running), an erased
    caller's session whose usage stays, and two sessions just outside the range."""
    users = {n: storage.user_for_identity("phone", n).id for n in (ONE, TWO, GONE)}

    # "a": 23:59:00 on 1 March to 00:01:30 on 2 March: it all counts on 1 March.
    storage.start_session(
        SessionRecord("a", users[ONE], "twilio", "assistant", "mindbot", at("2025-03-01T23:59"))
    )
    tools = [{"name": "calculate", "status": "ok"}, {"name": "get_weather", "status": "error"}]
    storage.add_turns(
        [
            turn("a", 0, "assistant", "2025-03-01T23:59:01"),  # the greeting: no latency
            turn("a", 1, "user", "2025-03-01T23:59:10", emotion=feeling("sad", -0.6)),
            turn("a", 2, "assistant", "2025-03-01T23:59:20", latency_secs=0.8, tool_calls=tools),
            turn("a", 3, "user", "2025-03-02T00:00:10", emotion=feeling("neutral", 0.0)),
            turn(
                "a",
                4,
                "assistant",
                "2025-03-02T00:00:20",
                latency_secs=1.2,
                interrupted=True,
                tool_calls=[{"name": "send_email", "status": "declined"}],
            ),
            turn("a", 5, "user", "2025-03-02T00:00:40", emotion=feeling("happy", 0.5)),
            turn("a", 6, "user", "2025-03-02T00:00:50", emotion=feeling("happy", 0.7)),
            turn("a", 7, "assistant", "2025-03-02T00:01:00", latency_secs=0.5),
        ]
    )
    for record in (
        usage("a", "2025-03-01T23:59:20", "llm", "openai", "gpt-4.1-mini", 600, 100),
        usage("a", "2025-03-02T00:00:20", "llm", "openai", "gpt-4.1-mini", 400, 100),
        usage("a", "2025-03-01T23:59:01", "tts", "cartesia", "sonic", characters=500),
        usage("a", "2025-03-02T00:01:00", "stt", "deepgram", "nova-3", audio_secs=60.0),
    ):
        storage.add_usage(record)
    storage.add_event("session.error", {"session_id": "a", "kind": "tts", "processor": "tts#0"})
    storage.end_session("a", "completed", ended_at=at("2025-03-02T00:01:30"))

    # "b": 2 March, 30 s, the offline stack (free); one emotion: no halves to compare.
    storage.start_session(
        SessionRecord("b", users[TWO], "webrtc", "assistant", "tutor", at("2025-03-02T00:00:10"))
    )
    storage.add_turns(
        [
            turn("b", 0, "assistant", "2025-03-02T00:00:11"),
            turn("b", 1, "user", "2025-03-02T00:00:20", emotion=feeling("angry", -0.8)),
            turn("b", 2, "assistant", "2025-03-02T00:00:25", latency_secs=2.0),
            turn("b", 3, "user", "2025-03-02T00:00:35"),
        ]
    )
    for record in (
        usage("b", "2025-03-02T00:00:25", "llm", "local", "smollm2", 300, 50),
        usage("b", "2025-03-02T00:00:12", "tts", "piper", characters=100),
        usage("b", "2025-03-02T00:00:30", "stt", "whisper", "tiny.en", audio_secs=20.0),
    ):
        storage.add_usage(record)
    storage.end_session("b", "completed", ended_at=at("2025-03-02T00:00:40"))

    # "c": an anonymous caller, still on the line (no duration yet).
    storage.start_session(
        SessionRecord("c", None, "twilio", "assistant", "mindbot", at("2025-03-02T12:00"))
    )
    storage.add_turn(turn("c", 0, "assistant", "2025-03-02T12:00:01", latency_secs=0.3))
    storage.add_usage(usage("c", "2025-03-02T12:00:01", "tts", "cartesia", characters=1000))

    # "d": its caller is erased; the 120 s Deepgram heard still counts on 2 March.
    storage.start_session(
        SessionRecord("d", users[GONE], "twilio", "assistant", "mindbot", at("2025-03-02T15:00"))
    )
    storage.add_turn(turn("d", 0, "assistant", "2025-03-02T15:00:01", latency_secs=9.0))
    storage.add_usage(usage("d", "2025-03-02T15:00:05", "stt", "deepgram", audio_secs=120.0))
    storage.end_session("d", "completed", ended_at=at("2025-03-02T15:01"))
    storage.erase_user(users[GONE])

    # Just outside 1-3 March, on both sides.
    for session_id, moment in (("early", "2025-02-28T23:59:59.999"), ("late", "2025-03-04T00:00")):
        storage.start_session(
            SessionRecord(session_id, users[ONE], "twilio", "assistant", "mindbot", at(moment))
        )
        storage.add_turn(turn(session_id, 0, "assistant", moment, latency_secs=7.0))
        storage.add_usage(usage(session_id, moment, "tts", "cartesia", characters=10**6))
    return users


@pytest.fixture
def march(tmp_path):
    storage = SQLiteStorage(tmp_path / "mindbot.db")
    users = write_march(storage)
    yield storage, users
    storage.close()


def empty_day(day: str) -> dict:
    return {"day": day, "sessions": 0, "turns": 0, "duration_secs": 0.0, "interruptions": 0}


def test_percentiles_are_nearest_rank_and_halves_skip_the_middle():
    assert nearest_rank([4, 1, 3, 2], 50) == 2  # linear interpolation would say 2.5
    assert nearest_rank([4, 1, 3, 2], 95) == 4
    hundred = [n / 100 for n in range(100, 0, -1)]  # 0.01 .. 1.00, shuffled order
    assert (nearest_rank(hundred, 50), nearest_rank(hundred, 95)) == (0.5, 0.95)
    assert nearest_rank(list(range(1, 21)), 95) == 19
    assert nearest_rank([0.7], 95) == 0.7 and nearest_rank([], 50) is None
    assert halves([1, 2, 3, 4, 5]) == ([1, 2], [4, 5]) and halves([1]) == ([], [])


def test_each_utc_day_adds_up_exactly(march):
    storage, _ = march
    report = Analytics(storage, PRICES).daily(*MARCH)
    assert (report["since"], report["until"], report["currency"]) == (
        "2025-03-01",
        "2025-03-03",
        "EUR",
    )
    first, second, third = report["days"]
    assert first == {
        "day": "2025-03-01",
        "sessions": 1,
        "turns": 8,
        "duration_secs": 150.0,  # 23:59:00 to 00:01:30: the session is not split at midnight
        "interruptions": 1,
        "latency_p50": 0.8,  # of 0.5, 0.8, 1.2
        "latency_p95": 1.2,
        "tool_calls": 3,
        "tool_success_rate": 0.5,  # one ok, one error; the declined call is neither
        "errors": 1,
        "llm_prompt_tokens": 1000,
        "llm_completion_tokens": 200,
        "tts_characters": 500,
        "stt_audio_secs": 60.0,
        "cost": pytest.approx(0.0014 + 0.015 + 0.01),
        "cost_breakdown": {
            "llm": pytest.approx(0.0014),  # (1000 x 1 + 200 x 2) per million
            "tts": pytest.approx(0.015),  # 500 x 30 per million
            "stt": pytest.approx(0.01),  # one minute at 0.01
        },
        "latency_samples": 3,
        "tool_errors": 1,
        "valence_first_half": pytest.approx(-0.3),  # sad -0.6, neutral 0.0
        "valence_second_half": pytest.approx(0.6),  # happy 0.5, happy 0.7
        "emotion_labels": {"happy": 2, "neutral": 1, "sad": 1},
    }
    # 2 March: "b" and the running "c"; the erased caller's session is gone, its usage is not.
    assert second["sessions"] == 2 and second["turns"] == 5
    assert second["duration_secs"] == 30.0 and second["interruptions"] == 0
    assert (second["latency_p50"], second["latency_p95"]) == (0.3, 2.0)
    assert (second["tool_calls"], second["tool_success_rate"], second["errors"]) == (0, None, 0)
    assert (second["llm_prompt_tokens"], second["llm_completion_tokens"]) == (300, 50)
    assert (second["tts_characters"], second["stt_audio_secs"]) == (1100, 140.0)
    assert second["cost"] == pytest.approx(0.03 + 0.02)  # local, piper, whisper cost nothing
    assert (second["valence_first_half"], second["valence_second_half"]) == (None, None)
    assert second["emotion_labels"] == {"angry": 1}
    assert third == {
        **third,
        **empty_day("2025-03-03"),
        "latency_p50": None,
        "tool_success_rate": None,
        "cost": 0.0,
        "emotion_labels": {},
    }

    totals = report["totals"]
    assert totals["sessions"] == 3 and totals["turns"] == 13
    assert totals["duration_secs"] == 180.0 and totals["latency_samples"] == 5
    # Pooled over 0.3 0.5 0.8 1.2 2.0: nearest rank gives 2.0 where interpolation gives 1.84.
    assert (totals["latency_p50"], totals["latency_p95"]) == (0.8, 2.0)
    assert totals["cost"] == pytest.approx(0.0264 + 0.05)
    assert totals["stt_audio_secs"] == 200.0 and totals["tts_characters"] == 1600
    assert list(first)[1 : len(FIELDS) + 1] == list(FIELDS)


def test_groups_by_user_persona_and_provider(march):
    storage, users = march
    analytics = Analytics(storage, PRICES)

    by_user = {g["key"]: g for g in analytics.breakdown("user", *MARCH)["groups"]}
    assert list(by_user) == sorted([users[ONE], users[TWO]]) + [None]
    assert by_user[users[ONE]]["turns"] == 8 and by_user[users[TWO]]["turns"] == 4
    # No user: the anonymous caller's session and the erased caller's usage.
    assert by_user[None]["sessions"] == 1 and by_user[None]["cost"] == pytest.approx(0.05)

    personas = analytics.breakdown("persona", *MARCH)
    by_persona = {g["key"]: g for g in personas["groups"]}
    assert list(by_persona) == ["mindbot", "tutor", None]
    assert by_persona["mindbot"]["sessions"] == 2 and by_persona["tutor"]["sessions"] == 1
    assert by_persona["mindbot"]["latency_p95"] == 1.2  # 0.3 0.5 0.8 1.2
    assert by_persona[None]["sessions"] == 0 and by_persona[None]["stt_audio_secs"] == 120.0
    assert sum(g["cost"] for g in personas["groups"]) == pytest.approx(personas["totals"]["cost"])

    by_provider = {g["key"]: g for g in analytics.breakdown("provider", *MARCH)["groups"]}
    assert sorted(by_provider) == ["cartesia", "deepgram", "local", "openai", "piper", "whisper"]
    assert (
        by_provider["cartesia"]["sessions"] == 2
        and by_provider["cartesia"]["tts_characters"] == 1500
    )
    assert by_provider["cartesia"]["cost"] == pytest.approx(0.045)
    assert by_provider["deepgram"]["sessions"] == 1  # "a"; the erased caller's usage has none
    assert by_provider["deepgram"]["stt_audio_secs"] == 180.0
    assert by_provider["openai"]["llm_prompt_tokens"] == 1000
    assert by_provider["openai"]["tts_characters"] == 0 and by_provider["local"]["cost"] == 0.0


def test_one_session_in_figures_and_a_new_price_reprices_history(march):
    storage, users = march
    figures = Analytics(storage, PRICES).session("a")
    assert (figures["session_id"], figures["user_id"], figures["day"]) == (
        "a",
        users[ONE],
        "2025-03-01",
    )
    assert (figures["sessions"], figures["turns"], figures["duration_secs"]) == (1, 8, 150.0)
    assert figures["emotion_trend"] == [
        {"turn": 1, "label": "sad", "valence": -0.6},
        {"turn": 3, "label": "neutral", "valence": 0.0},
        {"turn": 5, "label": "happy", "valence": 0.5},
        {"turn": 6, "label": "happy", "valence": 0.7},
    ]
    llm = next(u for u in figures["usage"] if u["service"] == "llm")
    assert (llm["prompt_tokens"], llm["completion_tokens"], llm["requests"]) == (1000, 200, 2)
    assert figures["cost_breakdown"]["llm"] == pytest.approx(0.0014)

    dearer = PricingSettings(
        currency="EUR",
        llm={"openai/gpt-4.1-mini": TokenPrice(prompt_per_million=10, completion_per_million=20)},
        tts={"cartesia": 30.0},
        stt={"deepgram": 0.01},
    )
    again = Analytics(storage, dearer).session("a")
    assert again["cost_breakdown"]["llm"] == pytest.approx(0.014)  # the stored rows, re-priced
    assert again["cost"] == pytest.approx(0.014 + 0.015 + 0.01)
    assert Analytics(storage, PRICES).session("nope") is None


def test_date_ranges_default_to_fourteen_days_and_refuse_more_than_a_year(tmp_path):
    today = date(2025, 6, 30)
    assert date_range(None, None, today=today) == (date(2025, 6, 17), today)
    assert date_range(None, date(2025, 1, 14)) == (date(2025, 1, 1), date(2025, 1, 14))
    assert date_range(date(2024, 1, 1), date(2024, 12, 31)) == (
        date(2024, 1, 1),
        date(2024, 12, 31),
    )
    with pytest.raises(ValueError, match="366"):
        date_range(date(2024, 1, 1), date(2025, 1, 1))
    with pytest.raises(ValueError, match="before"):
        date_range(date(2025, 1, 2), date(2025, 1, 1))
    for bad in ("2025-02-30", "2025-3-1", "1740787200", "2025-03-01T00:00"):
        with pytest.raises(ValueError):
            parse_day(bad)
    storage = SQLiteStorage(tmp_path / "empty.db")
    report = Analytics(storage, PRICES).daily(date(2030, 1, 1), date(2030, 1, 2))
    storage.close()
    assert [d["day"] for d in report["days"]] == ["2030-01-01", "2030-01-02"]
    assert report["totals"]["sessions"] == 0 and report["totals"]["latency_p95"] is None


async def test_the_routes_keep_their_contract_and_refuse_bad_requests(cloud_services):
    bot = cloud_services.bot(pricing=PRICES)
    try:
        users = write_march(bot.storage)
        reader = new_key(bot, ["read"], name="dashboard")
        revoked = new_key(bot, ["admin"], name="old")
        bot.storage.revoke_api_key(bot.storage.api_keys()[-1].id)
        async with api_client(bot) as client:

            async def get(path, headers=reader, **params):
                return await client.get(f"/api/v1/analytics/{path}", params=params, headers=headers)

            daily = await get("daily", since="2025-03-01", until="2025-03-03")
            assert daily.status_code == 200
            body = daily.json()
            assert {"since", "until", "currency", "days", "totals"} <= set(body)
            assert [d["day"] for d in body["days"]] == ["2025-03-01", "2025-03-02", "2025-03-03"]
            for day in body["days"]:
                assert set(FIELDS) | {"day"} <= set(day)
            assert set(FIELDS) <= set(body["totals"]) and "day" not in body["totals"]
            assert body["days"][0]["latency_p95"] == 1.2 and body["currency"] == "EUR"
            assert body["totals"]["cost"] == pytest.approx(0.0764)

            before = datetime.now(UTC).date()
            recent = (await get("daily")).json()["days"]
            assert len(recent) == 14
            assert recent[-1]["day"] in {before.isoformat(), datetime.now(UTC).date().isoformat()}
            assert all(d["sessions"] == 0 and d["cost"] == 0 for d in recent)

            by_user = await get("breakdown", by="user", since="2025-03-01", until="2025-03-03")
            assert by_user.status_code == 200 and by_user.json()["by"] == "user"
            keys = [g["key"] for g in by_user.json()["groups"]]
            assert keys == sorted([users[ONE], users[TWO]]) + [None]
            assert ONE not in by_user.text and TWO not in by_user.text
            providers = await get(
                "breakdown", by="provider", since="2025-03-01", until="2025-03-03"
            )
            assert {"key", *FIELDS} <= set(providers.json()["groups"][0])

            session = await get("sessions/a")
            assert session.status_code == 200
            assert set(session.json()["cost_breakdown"]) == {"llm", "tts", "stt"}
            assert session.json()["emotion_trend"][0] == {
                "turn": 1,
                "label": "sad",
                "valence": -0.6,
            }

            assert (await get("sessions/nope")).status_code == 404
            for params in (
                {"since": "2025-02-30"},
                {"since": "03/01/2025"},
                {"until": "2025-03-01T00:00:00Z"},
                {"since": "2025-03-02", "until": "2025-03-01"},
                {"since": "2024-01-01", "until": "2025-01-01"},  # 367 days
            ):
                refused = await get("daily", **params)
                assert refused.status_code == 422, params
            assert (await get("daily", since="2024-01-01", until="2024-12-31")).status_code == 200
            assert (await get("breakdown", by="transport")).status_code == 422
            assert (await get("breakdown")).status_code == 422
            assert (await get("daily", headers={})).status_code == 401
            assert (
                await get("daily", headers={"Authorization": "Bearer mb_nope"})
            ).status_code == 401
            assert (await get("daily", headers=revoked)).status_code == 401
        audit = bot.storage.access_audit(action="session.analytics.read")
    finally:
        bot.stop()
    assert [(row.actor, row.session_id, row.user_id) for row in audit] == [
        ("dashboard", "a", users[ONE])
    ]


async def test_a_phone_call_is_counted_and_priced_in_todays_analytics(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    bot = cloud_services.bot(pricing=PRICES)
    phone = "+15550108899"
    try:
        reader = new_key(bot, ["read"], rate=6000)  # polled every 0.1 s below
        async with api_client(bot) as client:
            await simulated_call(
                ws_url(str(client.base_url).rstrip("/")),
                ["What is the capital of France?"],
                from_number=phone,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions)
            today = datetime.now(UTC).date().isoformat()

            async def todays():
                response = await client.get(
                    "/api/v1/analytics/daily",
                    params={"since": today, "until": today},
                    headers=reader,
                )
                assert response.status_code == 200, response.text
                return response.json()["days"][0]

            # Turns and usage reach the database from the background writer: wait for the reply's.
            day = await poll(todays, lambda d: d["turns"] == 3 and d["llm_completion_tokens"] > 0)
            (session,) = bot.storage.list_sessions()
            figures = (
                await client.get(f"/api/v1/analytics/sessions/{session.id}", headers=reader)
            ).json()
            by_provider = (
                await client.get(
                    "/api/v1/analytics/breakdown",
                    params={"by": "provider", "since": today, "until": today},
                    headers=reader,
                )
            ).json()
        turns = bot.storage.turns(session.id)
        used = bot.storage.usage(session_id=session.id)
        user = bot.storage.find_user(phone)
    finally:
        bot.stop()

    latencies = [t.latency_secs for t in turns if t.role == "assistant" and t.latency_secs]
    assert latencies and day["sessions"] == 1
    assert day["latency_p50"] == nearest_rank(latencies, 50) and day["latency_p95"] == max(
        latencies
    )
    assert day["llm_prompt_tokens"] == sum(u.prompt_tokens for u in used if u.service == "llm") > 20
    assert day["tts_characters"] == sum(u.characters for u in used if u.service == "tts") > 30
    assert day["stt_audio_secs"] == pytest.approx(sum(u.audio_secs for u in used), abs=1e-3)
    expected = PRICES.cost_parts(used)
    assert all(part > 0 for part in expected.values())
    assert day["cost"] == pytest.approx(sum(expected.values()), abs=1e-6)
    assert figures["cost_breakdown"] == pytest.approx(expected, abs=1e-6)
    assert (figures["user_id"], figures["turns"], figures["end_reason"]) == (
        user.id,
        3,
        "completed",
    )
    groups = {g["key"]: g for g in by_provider["groups"]}
    assert set(groups) == {"openai", "deepgram", "cartesia"}
    assert all(g["sessions"] == 1 and g["cost"] > 0 for g in groups.values())
    assert phone not in json.dumps([day, figures, by_provider])
