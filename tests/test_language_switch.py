"""Language switching: the caller changes language, the bot's voice and replies follow."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    TextFrame,
    TranscriptionFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transcriptions.language import Language

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.preferences import LANGUAGES
from mindbot.standins import DeepgramStandIn, Text
from mindbot.voices import VoiceCatalog
from pipelines.assistant import run
from processors.frames import VoiceStyleFrame
from processors.language_switcher import (
    MESSAGE_NAME,
    LanguageSwitcher,
    language_code,
    word_count,
)

pytestmark = pytest.mark.timeout(60)

CATALOG = VoiceCatalog.load()
ENGLISH_VOICE = CATALOG.for_language("en", "cartesia").id
SPANISH_VOICE = CATALOG.for_language("es", "cartesia").id
RATE = 16000


def _switcher(**kwargs) -> LanguageSwitcher:
    defaults = {
        "language": "en",
        "voice": ENGLISH_VOICE,
        "voice_for": _cartesia_voice_for,
        "names": LANGUAGES,
        "languages": CATALOG.languages("cartesia"),
    }
    return LanguageSwitcher(**{**defaults, **kwargs})


def _cartesia_voice_for(code: str) -> str | None:
    voice = CATALOG.for_language(code, "cartesia")
    return voice.id if voice else None


def _said(text: str, language=None) -> TranscriptionFrame:
    return TranscriptionFrame(text, "caller", "2026-01-01T00:00:00Z", language)


# -- Deciding when the caller has switched ------------------------------------------------


def test_one_confident_turn_with_enough_words_switches_and_a_single_word_does_not():
    switcher = _switcher()
    assert switcher.heard("es", "Sí.") is None
    assert switcher.heard("en", "Sorry, I meant yes.") is None  # back in English: reset
    assert switcher.heard("es", "Gracias.") is None
    assert switcher.language == "en" and switcher.instruction() is None
    assert switcher.heard(Language.ES_MX, "Quiero reservar una mesa para dos") == "es"
    assert switcher.language == "es"
    assert "Spanish" in switcher.instruction()
    assert switcher.heard("es", "y también un postre") is None  # already Spanish


def test_short_turns_in_the_new_language_add_up():
    switcher = _switcher()
    assert switcher.heard("fr", "Oui.") is None
    assert switcher.heard("fr", "D'accord.") is None
    assert switcher.heard("fr", "Merci.") == "fr"
    assert switcher.voice("fr") == CATALOG.for_language("fr", "cartesia").id


def test_unsure_unknown_and_unsupported_languages_are_ignored():
    switched: list[tuple[str, str]] = []
    switcher = _switcher(on_switch=lambda old, new: switched.append((old, new)))
    assert switcher.heard("de", "Ich möchte einen Tisch reservieren", confidence=0.2) is None
    assert switcher.heard("xx", "blah blah blah blah") is None  # not a voice's language
    for odd in (None, "", "multi", "español", "\x00", "ｅｓ", 42, "e" * 10_000):
        assert switcher.heard(odd, "some words in there") is None
    assert switcher.heard("es", "hola " * 3, words=1) is None  # only one word was Spanish
    assert switched == []
    assert switcher.heard("de", "Ich möchte einen Tisch reservieren", confidence=0.95) == "de"
    assert switched == [("en", "de")]


def test_coming_back_restores_the_starting_voice_and_a_failing_picker_keeps_the_voice():
    switcher = _switcher(voice="my-own-voice")
    assert switcher.heard("es", "hola qué tal estás") == "es"
    assert switcher.heard("en", "let's go back to English") == "en"
    assert switcher.voice("en") == "my-own-voice"
    assert "English" in switcher.instruction()

    def broken(_code: str) -> str | None:
        raise RuntimeError("catalog gone")

    switcher = _switcher(voice_for=broken)
    assert switcher.heard("es", "hola qué tal estás") == "es"
    assert switcher.voice("es") is None


def test_the_switcher_rejects_bad_arguments():
    with pytest.raises(ValueError):
        LanguageSwitcher(language="English")
    with pytest.raises(ValueError):
        LanguageSwitcher(min_words=0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hola, ¿qué tal?", 3),
        ("我想预订一张桌子", 4),
        ("予約をお願いします", 5),
        ("مرحبا كيف حالك", 3),
        ("😀 🎤 !!!", 0),
        ("", 0),
        ("e\u0301 a\u0300", 2),
        ("word\x00word", 1),
    ],
)
def test_word_count_handles_unspaced_scripts_and_symbols(text, words):
    assert word_count(text) == words


@pytest.mark.parametrize(
    ("tag", "code"), [(Language.ES, "es"), ("pt-BR", "pt"), ("zh_Hans", "zh"), ("1a", None)]
)
def test_language_code(tag, code):
    assert language_code(tag) == code


# -- The processors ------------------------------------------------------------------------


async def test_the_listener_emits_a_voice_style_before_the_switching_transcription():
    switcher = _switcher()
    frames = [
        _said("What time do you open?", Language.EN),
        _said("Hola, ¿a qué hora abren?", Language.ES),
        _said("Y el domingo también", Language.ES),
    ]
    down, _ = await run_test(
        switcher.listener(),
        frames_to_send=frames,
        expected_down_frames=[TranscriptionFrame, VoiceStyleFrame, *[TranscriptionFrame] * 2],
    )
    style = down[1]
    assert (style.source, style.language, style.voice) == ("language", "es", SPANISH_VOICE)
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == [f.text for f in frames]


async def test_a_voice_chosen_by_command_comes_back_with_its_language():
    switcher = _switcher()
    command = VoiceStyleFrame(source="command", voice="chosen-by-command")
    down, _ = await run_test(
        switcher.listener(),
        frames_to_send=[
            command,
            _said("Hola, ¿a qué hora abren hoy?", "es"),
            _said("OK, back to English now please", "en"),
        ],
        expected_down_frames=[VoiceStyleFrame, VoiceStyleFrame, TranscriptionFrame]
        + [VoiceStyleFrame, TranscriptionFrame],
    )
    assert down[0] is command
    assert (down[1].language, down[1].voice) == ("es", SPANISH_VOICE)
    assert (down[3].language, down[3].voice) == ("en", "chosen-by-command")


async def test_bad_transcripts_pass_through_in_order_without_a_switch():
    weird = [
        _said(""),
        _said("😀🎤🔥", "es"),
        _said("שלום, מה שלומך היום?", "he"),
        _said("e\u0301\u0301\u0301 a\u0300", "fr"),
        _said("nul\x00byte here now"),
        _said("x" * 10_000, "de-DE-u-co-phonebk"),
        _said("hola", "zz-ÿ"),
        _said("hello there friend", "multi"),
    ]
    weird[0].text = None  # an STT that sends no text at all
    passing = [InterimTranscriptionFrame("hola que", "caller", "t", Language.ES), TextFrame("hi")]
    down, up = await run_test(
        _switcher(languages=["en", "es", "fr"]).listener(),
        frames_to_send=[*weird, *passing, _said("🙂 " * 50, "es")],
        expected_down_frames=[*[TranscriptionFrame] * 8, InterimTranscriptionFrame, TextFrame]
        + [TranscriptionFrame],
    )
    assert down[:8] == weird
    assert not [f for f in up if isinstance(f, ErrorFrame)]


async def test_the_injector_keeps_one_language_message_before_the_last_user_message():
    switcher = _switcher()
    context = LLMContext(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Hola, ¿cómo estás hoy?"},
        ]
    )
    injector = switcher.injector()
    switcher.heard("en", "Hi")
    down, _ = await run_test(
        injector, frames_to_send=[LLMContextFrame(context)], expected_down_frames=[LLMContextFrame]
    )
    assert not [m for m in context.get_messages() if m.get("name") == MESSAGE_NAME]

    switcher.heard("es", "Hola, ¿cómo estás hoy?")
    await run_test(
        switcher.injector(),
        frames_to_send=[LLMContextFrame(context), LLMContextFrame(context)],
        expected_down_frames=[LLMContextFrame, LLMContextFrame],
    )
    messages = context.get_messages()
    ours = [i for i, m in enumerate(messages) if m.get("name") == MESSAGE_NAME]
    assert len(ours) == 1 and messages[ours[0]]["role"] == "developer"
    assert "Reply only in Spanish" in messages[ours[0]]["content"]
    assert messages[ours[0] + 1]["content"] == "Hola, ¿cómo estás hoy?"

    empty = LLMContext()
    await run_test(
        switcher.injector(),
        frames_to_send=[LLMContextFrame(empty)],
        expected_down_frames=[LLMContextFrame],
    )
    assert empty.get_messages()[-1]["name"] == MESSAGE_NAME  # no user message: at the end


# -- The Deepgram stand-in with language=multi ------------------------------------------


def _speech_frames(speech_secs: float, silence_secs: float) -> list:
    t = np.arange(int(RATE * 0.02)) / RATE
    tone = (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
    quiet = bytes(len(tone))
    frames: list = []
    for i in range(int(speech_secs / 0.02) + int(silence_secs / 0.02)):
        audio = tone if i < speech_secs / 0.02 else quiet
        frames += [InputAudioRawFrame(audio, RATE, 1), SleepFrame(0.002)]
    return frames


async def test_the_deepgram_stand_in_reports_scripted_languages_with_language_multi():
    transcripts = ["hello there my friend", ("hola amigo qué tal", "es")]
    frames = _speech_frames(0.5, 0.5) + _speech_frames(0.5, 0.5) + [SleepFrame(0.3)]
    async with DeepgramStandIn(transcripts=transcripts) as dg:
        multi = DeepgramSTTService(
            api_key="x", base_url=dg.url, settings=DeepgramSTTService.Settings(language="multi")
        )
        down, _ = await run_test(multi, frames_to_send=frames)
        assert dg.connections[0]["query"]["language"] == ["multi"]
        dg.add_transcripts(("bonjour", "fr"))
        plain = DeepgramSTTService(api_key="x", base_url=dg.url)
        plain_down, _ = await run_test(plain, frames_to_send=_speech_frames(0.5, 0.5))
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert [(f.text, f.language) for f in finals] == [
        ("hello there my friend", Language.EN),
        ("hola amigo qué tal", Language.ES),
    ]
    words = finals[1].result.channel.alternatives[0].words
    assert {w.language for w in words} == {"es"}
    interims = [f for f in down if isinstance(f, InterimTranscriptionFrame)]
    assert [f.language for f in interims] == [Language.EN, Language.ES]
    # Without language=multi, Deepgram reports no language (as before).
    (plain_final,) = [f for f in plain_down if isinstance(f, TranscriptionFrame)]
    assert (plain_final.text, plain_final.language) == ("bonjour", None)


# -- A whole call through the assistant pipeline: the caller speaks English, then Spanish ------


async def test_a_caller_who_switches_to_spanish_is_answered_in_spanish(cloud_services, voice_cache):
    english_reply = "It is sunny and warm today."
    spanish_reply = "¡Claro! Hoy hace sol y calor."
    cloud_services.deepgram.add_transcripts(
        ("What is the weather like today", "en"),
        ("Hola, ¿podemos hablar en español, por favor?", "es"),
    )
    cloud_services.llm.script(Text(english_reply), Text(spanish_reply))
    bot = cloud_services.bot(memory=False)
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["What is the weather like today", "Could we speak another language now"],
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()

    assert cloud_services.deepgram.connections[0]["query"]["language"] == ["multi"]

    def spoken_with(text: str) -> set[tuple[str, str]]:
        return {
            (r["voice"]["id"], r.get("language"))
            for r in cloud_services.cartesia.requests
            if text in r.get("transcript", "")
        }

    assert spoken_with("Hi, I'm MindBot") == {(ENGLISH_VOICE, "en")}
    assert spoken_with("sunny and warm") == {(ENGLISH_VOICE, "en")}
    assert spoken_with("Hoy hace sol") == {(SPANISH_VOICE, "es")}

    first, second = cloud_services.llm.requests[:2]
    assert not [m for m in first["messages"] if m.get("name") == MESSAGE_NAME]
    (instruction,) = [m for m in second["messages"] if m.get("name") == MESSAGE_NAME]
    assert instruction["role"] == "developer"
    assert "Reply only in Spanish" in instruction["content"]
    user = [m["content"] for m in second["messages"] if m["role"] == "user"]
    assert "español" in user[-1]
