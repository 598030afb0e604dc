"""Recognition tuning: the session's vocabulary, and a rare name Whisper hears only with it."""

from pathlib import Path

import pytest
from pipecat.frames.frames import TranscriptionFrame

from mindbot.audio import read_wav, resample
from mindbot.memory import MemoryContext
from mindbot.services import LLMEndpoint, ServiceFactory, SharedModels
from mindbot.speech import synthesize
from mindbot.storage import MemoryRecord
from mindbot.vocabulary import (
    DEEPGRAM_MAX_TERMS,
    WHISPER_MAX_CHARS,
    WHISPER_MAX_TERMS,
    build_vocabulary,
    deepgram_keyterms,
    merge_terms,
    proper_nouns,
    whisper_prompt,
)

from conftest import make_settings

CORPUS = Path(__file__).parent / "fixtures" / "kb" / "corpus"


@pytest.fixture(scope="module")
def kb_texts() -> list[str]:
    return [p.read_text() for p in sorted(CORPUS.glob("*.md")) + sorted(CORPUS.glob("*.txt"))]


def memory() -> MemoryContext:
    return MemoryContext(
        name="Saoirse",
        memories=[
            MemoryRecord(1, "Works with Wojciechowski on the Tidewater launch", "fact", 0.9),
            MemoryRecord(1, "Loves hiking", "fact", 0.8),
        ],
    )


def test_a_knowledge_bases_proper_nouns_are_its_names_places_and_products(kb_texts):
    terms = proper_nouns(kb_texts)
    assert {"Bellport", "Ridgefield", "TrailSync", "Tidewater", "X2"} <= set(terms)
    # Capitalized in headings but also written in lower case: not names.
    assert not {"Employee", "Handbook", "Policy", "Welcome", "The"} & set(terms)


def test_a_remembered_facts_opening_verb_is_not_a_name():
    facts = ["Loves hiking near Llandudno", "Has a daughter named Aoife"]
    terms = proper_nouns(facts, sentence_starts=False)
    assert terms == ["Llandudno", "Aoife"]


def test_the_vocabulary_puts_the_deployment_then_the_caller_then_the_knowledge_base(kb_texts):
    vocabulary = build_vocabulary(
        deployment=["MindBot", "Harbor Lane"],
        memory=memory(),
        user_terms=["saoirse", "Dún Laoghaire"],
        kb_titles=["Harbor Lane Employee Handbook"],
        kb_texts=kb_texts,
    )
    assert vocabulary[:6] == [
        "MindBot",
        "Harbor Lane",
        "Saoirse",
        "Wojciechowski",
        "Tidewater",
        "Dún Laoghaire",
    ]
    assert vocabulary[6] == "Harbor Lane Employee Handbook"
    assert "Bellport" in vocabulary
    assert "Loves" not in vocabulary
    assert len({t.casefold() for t in vocabulary}) == len(vocabulary)


def test_each_recognizer_gets_what_it_accepts():
    many = [f"Term{i}" for i in range(300)]
    keyterms = deepgram_keyterms(many)
    assert len(keyterms) == DEEPGRAM_MAX_TERMS and keyterms[0] == "Term0"
    long = [f"Supercalifragilistic{i}" for i in range(100)]
    assert sum(len(t) for t in deepgram_keyterms(long)) < 500 * 3
    prompt = whisper_prompt(many)
    assert prompt.startswith("Term0, Term1, ") and prompt.count(",") == WHISPER_MAX_TERMS - 1
    assert len(whisper_prompt(long)) <= WHISPER_MAX_CHARS
    assert deepgram_keyterms([]) == [] and whisper_prompt([]) == ""


def test_bad_input_is_dropped_not_raised():
    odd = [None, 42, "", "\x00", "🎉🎉", "x" * 10_000, "\u202eKowalczyk\u202c", "Zoë\u0301"]
    assert merge_terms(odd) == ["Kowalczyk", "Zoë́"]
    texts = [None, 7, "", "🎉 " * 1000, "A_" * 50_000, "\x00Kowalczyk called. Kowalczyk."]
    assert proper_nouns(texts) == ["Kowalczyk"]
    assert build_vocabulary(memory=MemoryContext(name=None, memories=[])) == []


def factory(**overrides) -> ServiceFactory:
    settings = make_settings(**overrides)
    return ServiceFactory(
        settings, settings.resolve(), SharedModels(settings), LLMEndpoint(None, "m", "k")
    )


def test_deepgram_gets_the_deployments_terms_then_the_sessions_as_keyterms():
    f = factory(deepgram_api_key="dg", audio={"vocabulary": ["Harbor Lane"]})
    stt = f.stt(vocabulary=["Saoirse", "harbor lane", None])
    assert stt.settings.keyterm == ["Harbor Lane", "Saoirse"]
    assert factory(deepgram_api_key="dg").stt().settings.keyterm is None


def test_whisper_gets_them_as_hotwords():
    f = factory(audio={"vocabulary": ["Harbor Lane"], "wake_phrases": ["Hey MindBot"]})
    assert f.stt(vocabulary=["Saoirse"]).settings.hotwords == "Harbor Lane, Hey MindBot, Saoirse"
    assert factory().stt().settings.hotwords is None


@pytest.fixture(scope="module")
def whisper_factory():
    return factory()


SPEECH = Path(__file__).parent / "fixtures" / "speech"


async def hear(stt, text: str, voice_cache: Path, recording: str | None = None) -> str:
    """What ``stt`` hears of ``text``: from a committed recording when given (Piper's output
    varies a little from one synthesis to the next, enough to change how Whisper hears a rare
    name), else freshly synthesized."""
    if recording:
        pcm, rate = read_wav(SPEECH / recording)
    else:
        pcm, rate = synthesize(text, cache_dir=voice_cache)
    heard = []
    async for frame in stt.run_stt(resample(pcm, rate, 16000)):
        if isinstance(frame, TranscriptionFrame):
            heard.append(frame.text.strip())
    return " ".join(heard)


@pytest.mark.parametrize(
    ("sentence", "name", "recording"),
    [
        ("Please call Wojciechowski tomorrow morning.", "Wojciechowski", "call-wojciechowski.wav"),
        ("Please call Saoirse tomorrow morning.", "Saoirse", "call-saoirse.wav"),
    ],
)
async def test_a_rare_name_is_heard_with_the_vocabulary_and_not_without(
    whisper_factory, voice_cache, kb_texts, sentence, name, recording
):
    vocabulary = build_vocabulary(deployment=["MindBot"], memory=memory(), kb_texts=kb_texts)
    without = await hear(whisper_factory.stt(), sentence, voice_cache, recording)
    with_vocabulary = await hear(
        whisper_factory.stt(vocabulary=vocabulary), sentence, voice_cache, recording
    )
    print(f"\n{name}: without {without!r}; with {with_vocabulary!r}")
    assert name not in without
    assert name in with_vocabulary


async def test_the_vocabulary_does_not_change_ordinary_speech(whisper_factory, voice_cache):
    vocabulary = build_vocabulary(deployment=["MindBot"], memory=memory())
    sentence = "What's the capital of France?"
    without = await hear(whisper_factory.stt(), sentence, voice_cache)
    assert await hear(whisper_factory.stt(vocabulary=vocabulary), sentence, voice_cache) == without
    assert "capital of france" in without.lower()
