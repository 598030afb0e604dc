"""Speech preferences: a caller's voice, speaking rate and language, stored and applied."""

import pytest

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.memory import MemoryService
from mindbot.preferences import parse_language, parse_rate, parse_voice, speech_style
from mindbot.standins import Text
from mindbot.storage import SQLiteStorage
from mindbot.voices import VoiceCatalog
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
    assert parse_voice(" British   Reading Lady ") == "British Reading Lady"
    assert parse_voice("x" * 101) is None and parse_voice("bad\x00voice") is None
    assert parse_voice("   ") is None


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
        voices = VoiceCatalog.load()
        memory = MemoryService(storage, resolve_voice=voices.resolver("cartesia"))
        assert memory.set_preference(user.id, "speaking_rate", "slow")["speaking_rate"] == 0.85
        assert memory.set_preference(user.id, "language", "German")["language"] == "German"
        assert "error" in memory.set_preference(user.id, "language", "Elvish")
        assert "error" in memory.set_preference(user.id, "speaking_rate", "warp nine")
        assert "error" in memory.set_preference(user.id, "voice", "bad voice id")
        assert "error" in memory.set_preference(user.id, "voice", "\x00")
        assert "error" in memory.set_preference(user.id, "wake_phrase", "computer")
        assert memory.set_preference(user.id, "wake_phrase", "hey  jarvis")["wake_phrase"] == (
            "hey jarvis"
        )
        assert storage.preferences(user.id)["wake_phrase"] == "hey jarvis"
        memory.set_preference(user.id, "wake_phrase", "none")
        assert storage.preferences(user.id).get("wake_phrase") is None
        lady = voices.resolve("British Reading Lady", "cartesia")
        assert lady is not None
        chosen = memory.set_preference(user.id, "voice", "the british reading lady")
        assert chosen["voice"] == lady.id
        stored = {k: v for k, v in storage.preferences(user.id).items() if v is not None}
        assert stored == {"speaking_rate": 0.85, "language": "de", "voice": lady.id}
    finally:
        storage.close()


def test_piper_speaks_slower_when_asked(offline_bot):
    from mindbot.local_services import MAX_PAUSE_SECS, _VoiceAtSpeed, pause_after

    voice = offline_bot.models.piper()

    def samples(speaker) -> int:
        return sum(len(chunk.audio_int16_bytes) for chunk in speaker.synthesize("Hello there."))

    normal, slow = samples(voice), samples(_VoiceAtSpeed(voice, 0.8))
    assert slow > normal * 1.15  # 1/0.8 = 1.25 times as long, give or take the pauses

    # A calmer, slower voice also pauses after each sentence; normal speed adds nothing.
    *_, last = _VoiceAtSpeed(voice, 0.85).synthesize("Hello there.")
    pause = len(last.audio_int16_bytes) / 2 / voice.config.sample_rate
    assert last.audio_int16_bytes.count(0) == len(last.audio_int16_bytes)
    assert abs(pause - pause_after(0.85)) < 0.01 and pause_after(0.85) == 0.25
    assert pause_after(1.0) == pause_after(1.2) == 0.0 and pause_after(0.5) == MAX_PAUSE_SECS


async def test_a_callers_preferences_shape_the_next_call(cloud_services, voice_cache, tmp_path):
    storage = SQLiteStorage(tmp_path / "mindbot.db")
    user = storage.user_for_identity("phone", CALLER)
    # The voice is stored by name, as a caller says it; the catalog turns it into Cartesia's id.
    for key, value in {"speaking_rate": 0.85, "language": "es", "voice": "Spanish Lady"}.items():
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
    spanish_lady = "d4db5fb9-f44b-4bd1-85fa-192e0f0d75f9"
    assert all(r["language"] == "es" and r["voice"]["id"] == spanish_lady for r in spoken)
    # Deepgram listens in any language, so the call can follow the caller out of Spanish.
    assert cloud_services.deepgram.connections[0]["query"]["language"] == ["multi"]
    instruction = cloud_services.llm.requests[0]["messages"][0]["content"]
    assert "Speak Spanish." in instruction
