"""Speech preferences: a caller's voice, speaking rate and language, stored and applied."""

import pytest

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.memory import MemoryService
from mindbot.preferences import parse_language, parse_rate, parse_voice, speech_style
from mindbot.standins import Text
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run

CALLER = "+15550106060"


@pytest.mark.parametrize(
    ("said", "rate"),
    [
        ("slow", 0.85),
        ("Faster", 1.15),
        ("normal", 1.0),
        ("1.2", 1.2),
        ("0.5", None),
        ("zippy", None),
    ],
)
def test_speaking_rates(said, rate):
    assert parse_rate(said) == rate


def test_languages_and_voices():
    assert parse_language("Spanish") == "es" and parse_language("fr") == "fr"
    assert parse_language("Klingon") is None
    assert parse_voice("a0e99841-438c-4a64-b679-ae501e7d6091") is not None
    assert parse_voice("two words") is None and parse_voice("x" * 101) is None


def test_preferences_override_the_persona():
    style = speech_style(
        {"cartesia": "persona-voice", "piper": "joe"},
        "en",
        {"voice": "caller-voice", "speaking_rate": 0.85, "language": "es"},
        "cartesia",
    )
    assert style.voices == {"cartesia": "caller-voice", "piper": "joe"}
    assert (style.speed, style.language, style.language_name) == (0.85, "es", "Spanish")
    default = speech_style({"cartesia": "persona-voice"}, "en", {}, "cartesia")
    assert default.speed is None and default.language == "en"


def test_preferences_are_validated_when_set(tmp_path):
    storage = SQLiteStorage(tmp_path / "m.db")
    try:
        user = storage.user_for_identity("phone", CALLER)
        memory = MemoryService(storage)
        assert memory.set_preference(user.id, "speaking_rate", "slow")["speaking_rate"] == 0.85
        assert memory.set_preference(user.id, "language", "German")["language"] == "German"
        assert "error" in memory.set_preference(user.id, "language", "Elvish")
        assert "error" in memory.set_preference(user.id, "speaking_rate", "warp nine")
        assert "error" in memory.set_preference(user.id, "voice", "bad voice id")
        assert storage.preferences(user.id) == {"speaking_rate": 0.85, "language": "de"}
    finally:
        storage.close()


def test_piper_speaks_slower_when_asked(offline_bot):
    from mindbot.local_services import _VoiceAtSpeed

    voice = offline_bot.models.piper()

    def samples(speaker) -> int:
        return sum(len(chunk.audio_int16_bytes) for chunk in speaker.synthesize("Hello there."))

    normal, slow = samples(voice), samples(_VoiceAtSpeed(voice, 0.8))
    assert slow > normal * 1.15  # 1/0.8 = 1.25 times as long, give or take the pauses


async def test_a_callers_preferences_shape_the_next_call(cloud_services, voice_cache, tmp_path):
    storage = SQLiteStorage(tmp_path / "mindbot.db")
    user = storage.user_for_identity("phone", CALLER)
    for key, value in {"speaking_rate": 0.85, "language": "es", "voice": "caller-voice-1"}.items():
        storage.set_preference(user.id, key, value)
    storage.close()

    cloud_services.llm.script(Text("Claro."))
    bot = cloud_services.bot(data_dir=tmp_path, memory=True)
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["Hello."],
                from_number=CALLER,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()

    spoken = cloud_services.cartesia.requests
    assert spoken and all(r["generation_config"] == {"speed": 0.85} for r in spoken)
    assert all(r["language"] == "es" and r["voice"]["id"] == "caller-voice-1" for r in spoken)
    assert cloud_services.deepgram.connections[0]["query"]["language"] == ["es"]
    instruction = cloud_services.llm.requests[0]["messages"][0]["content"]
    assert "Speak Spanish." in instruction
