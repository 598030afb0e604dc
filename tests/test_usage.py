"""What each session's services use (tokens, characters, audio seconds) is stored and priced,
and what fails in a session is recorded by kind."""

import sqlite3

import pytest

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.pricing import PricingSettings, TokenPrice
from mindbot.session import UsageReport
from mindbot.standins import HttpError, Text
from mindbot.storage import SCHEMA_VERSION, SessionRecord, SQLiteStorage, UsageRecord, utc_now
from pipelines.assistant import run

from conftest import wait_until


async def test_a_call_stores_the_usage_of_each_service(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    bot = cloud_services.bot()
    path = bot.settings.data_dir / "mindbot.db"
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?"],
                from_number="+15550107711",
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions)
    finally:
        bot.stop()

    storage = SQLiteStorage(path)
    (session,) = storage.list_sessions()
    usage = storage.usage(session_id=session.id)
    storage.close()
    by_service = {service: [u for u in usage if u.service == service] for service in ("llm", "tts")}
    (llm,) = by_service["llm"]  # one reply; the greeting is spoken text, not an LLM request
    assert (llm.provider, llm.model) == ("openai", bot.settings.llm_model)
    # The stand-in counts about four characters a token, as OpenAI's tokenizer roughly does.
    assert llm.prompt_tokens > 20 and llm.completion_tokens >= len("Paris is the capital") // 4
    spoken = sum(u.characters for u in by_service["tts"])
    greeting = "Hi, I'm MindBot"
    assert spoken >= len(greeting) + len("Paris is the capital of France.")
    assert {u.provider for u in by_service["tts"]} == {"cartesia"}
    assert {u.service for u in usage} == {"llm", "tts", "stt"}
    heard = sum(u.audio_secs for u in usage if u.service == "stt")
    assert heard > 1.0  # at least the question's audio went to Deepgram
    table = {"openai": TokenPrice(prompt_per_million=1, completion_per_million=2)}
    priced = PricingSettings(llm=table).cost_parts(usage)
    assert priced["llm"] > 0 and priced["tts"] > 0 and priced["stt"] > 0


def test_prices_come_from_the_table_by_model_then_provider():
    pricing = PricingSettings(
        currency="EUR",
        llm={"openai/gpt-4o": TokenPrice(prompt_per_million=2, completion_per_million=8)},
        tts={"cartesia": 30.0},
        stt={"deepgram/nova-3": 0.01},
    )
    dated = UsageReport("llm", "openai", "gpt-4o-2024-08-06", 500_000, 250_000)
    assert pricing.cost(dated) == pytest.approx(1.0 + 2.0)
    assert pricing.cost(UsageReport("tts", "cartesia", "sonic-3", characters=10_000)) == 0.3
    assert pricing.cost(UsageReport("stt", "deepgram", "nova-3-general", audio_secs=90)) == (
        pytest.approx(0.015)
    )
    assert pricing.cost(UsageReport("llm", "anthropic", "claude", 1000, 1000)) == 0.0
    with pytest.raises(ValueError):
        TokenPrice(prompt_per_million=-1, completion_per_million=0)


def test_erasing_a_user_unlinks_their_usage_but_keeps_it_counted(tmp_path):
    storage = SQLiteStorage(tmp_path / "m.db")
    user = storage.user_for_identity("phone", "+15550100000")
    storage.start_session(
        SessionRecord("s1", user.id, "twilio", "assistant", "mindbot", started_at=utc_now())
    )
    storage.add_usage(UsageRecord("s1", utc_now(), "stt", "deepgram", audio_secs=12.5))
    storage.erase_user(user.id)
    (row,) = storage.usage()
    assert row.session_id is None and row.audio_secs == 12.5
    storage.close()


def test_a_version_5_file_upgrades_with_an_empty_usage_table(tmp_path):
    path = tmp_path / "m.db"
    SQLiteStorage(path).close()
    with sqlite3.connect(path) as conn:  # back to version 5, as an older MindBot left it
        conn.execute("DROP TABLE usage")
        conn.execute("PRAGMA user_version = 5")
    storage = SQLiteStorage(path)
    assert storage.usage() == []
    storage.add_usage(UsageRecord(None, utc_now(), "llm", "local", prompt_tokens=3))
    assert [u.prompt_tokens for u in storage.usage()] == [3]
    storage.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6


async def test_a_failing_llm_is_recorded_as_an_error_of_the_session(cloud_services, voice_cache):
    secret = "the caller asked about Paris"
    cloud_services.llm.script(HttpError(400, secret, should_retry=False))
    bot = cloud_services.bot()
    path = bot.settings.data_dir / "mindbot.db"
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?"],
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions)
    finally:
        bot.stop()

    storage = SQLiteStorage(path)
    (session,) = storage.list_sessions()
    errors = [e["data"] for e in storage.events("session.error")]
    storage.close()
    assert errors and errors[0]["session_id"] == session.id
    assert errors[0]["kind"] == "llm" and "OpenAILLMService" in errors[0]["processor"]
    assert secret not in str(errors)  # the provider's message may quote the caller
