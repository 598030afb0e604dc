"""Emotion in a phone call through the assistant pipeline (Deepgram, OpenAI and Cartesia
stand-ins): each user turn is stored with its emotion, a caller who stays upset gets a hedged
hint to the LLM and a calmer voice, and a persona can opt out of emotional speech."""

from __future__ import annotations

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.standins import Text
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run
from processors.emotion_detector import MESSAGE_NAME

UPSET = [
    "This is ridiculous and I am really angry about it",
    "I have been waiting for an hour and nobody is helping me",
    "This is the worst service I have ever had",
]


async def upset_call(cloud_services, voice_cache, **settings):
    replies = ["I'm sorry about that.", "I understand.", "Let me fix that for you now."]
    cloud_services.llm.script(*(Text(r) for r in replies))
    bot = cloud_services.bot(memory=False, **settings)
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url), UPSET, cache_dir=voice_cache, transcribe_replies=False
            )
    finally:
        bot.stop()
    storage = SQLiteStorage(bot.settings.data_dir / "mindbot.db")
    try:
        (session,) = storage.list_sessions()
        turns = storage.turns(session.id)
    finally:
        storage.close()
    requests = [r for r in cloud_services.llm.requests if r.get("stream")]
    return turns, requests


def hints(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m.get("name") == MESSAGE_NAME]


def emotions_spoken(cartesia, text: str) -> set:
    return {
        (r.get("generation_config") or {}).get("emotion")
        for r in cartesia.requests
        if text in r.get("transcript", "")
    }


async def test_an_upset_caller_is_heard_stored_hinted_and_answered_more_calmly(
    cloud_services, voice_cache
):
    turns, requests = await upset_call(cloud_services, voice_cache)

    users = [t for t in turns if t.role == "user"]
    assert len(users) == len(UPSET)
    for turn in users:
        assert turn.emotion is not None
        assert set(turn.emotion) >= {"label", "valence", "arousal", "confidence", "cues"}
        assert turn.emotion["valence"] < 0  # every one of these is unpleasant
    labels = [t.emotion["label"] for t in users]
    assert set(labels[1:]) <= {"frustrated", "angry"}, labels

    # One odd turn does not move the bot; once it settles, the LLM is told, hedged.
    assert hints(requests[0]) == []
    (hint,) = hints(requests[-1])
    assert "sounds" in hint and ("frustrated" in hint or "upset" in hint or "angry" in hint)
    # ... and the voice calms down for the reply after that (Cartesia's emotion control).
    assert emotions_spoken(cloud_services.cartesia, "I'm sorry about that") == {None}
    assert emotions_spoken(cloud_services.cartesia, "Let me fix that") == {"calm"}


async def test_a_persona_that_is_not_emotional_keeps_its_voice(
    cloud_services, voice_cache, tmp_path
):
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "steady.yaml").write_text(
        "name: steady\ndisplay_name: Steady\ninstructions: You help callers.\n"
        "greeting: Hello there.\nemotional: false\n"
    )
    turns, requests = await upset_call(
        cloud_services, voice_cache, persona_dirs=[personas], persona="steady"
    )
    assert all(t.emotion for t in turns if t.role == "user")  # still detected and stored
    assert hints(requests[-1])  # and the LLM still hears about it
    assert emotions_spoken(cloud_services.cartesia, "Let me fix that") == {None}
