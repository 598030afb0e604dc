"""Speculative answers while smart-turn waits (``mindbot.speculation``), over real calls.

The caller's sentence is one smart-turn v3 judges unfinished in the packaged Piper voice, both
at its mid-sentence pause and at its end ("What is the weather going to be like in ...
Chicago this weekend": ``mindbot bench cutoff`` measured 3.3 s waits after it in both
systems). The cloud stand-ins are real servers on loopback; the LLM stand-in records every
chat request, which is how the speculative ones are seen.
"""

from __future__ import annotations

import asyncio

from mindbot.callsim import RATE, PhoneCall
from mindbot.harness import serve, ws_url
from mindbot.turn_bench import PAUSED_UTTERANCES, _speech, paused_speech
from pipelines.assistant import run

FIRST, SECOND = PAUSED_UTTERANCES[2]


def user_messages(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m.get("role") == "user"]


async def place_call(cloud_services, voice_cache, *, pause: float, **audio) -> tuple:
    first, second = await asyncio.gather(_speech(FIRST, voice_cache), _speech(SECOND, voice_cache))
    speech = paused_speech(2, first, second, pause)
    cloud_services.deepgram.add_transcripts(FIRST, SECOND)
    bot = await asyncio.to_thread(cloud_services.bot, memory=False, audio=audio)
    try:
        async with serve(bot, run) as url:
            ws = ws_url(url)
            async with PhoneCall(ws, from_number="+15550001111") as call:
                await call.wait_for_bot_speech(timeout=15)
                greeted = len(cloud_services.llm.requests)
                ended = await call.say(speech.pcm, RATE)
                answer = await call.wait_for_bot_speech(after=ended, quiet=0, timeout=15)
                await asyncio.sleep(0.5)
        requests = cloud_services.llm.requests[greeted:]
    finally:
        await asyncio.to_thread(bot.stop)
    began = ended - speech.second_end
    return requests, answer.start - ended, began, ended


async def test_a_turn_judged_unfinished_is_answered_from_a_held_speculation(
    cloud_services, voice_cache
):
    requests, answered_after, _, _ = await place_call(
        cloud_services, voice_cache, pause=1.0, speculative_llm=True
    )
    streamed = [r for r in requests if r.get("stream")]
    turns = [user_messages(r) for r in streamed]
    print(turns, f"answered {answered_after:.2f} s after the sentence")
    # During the pause smart-turn judged "What is ... like in" unfinished: the LLM was asked
    # on those words, and the answer was held, then withdrawn when the caller went on.
    assert turns[0][-1].lower().startswith("what is the weather")
    assert "chicago" not in turns[0][-1].lower()
    # After the sentence the same happened on the whole of it, and the turn ending with
    # those words released that answer: no request was made after the turn ended.
    assert "chicago" in turns[-1][-1].lower()
    assert len(turns) == 2, turns
    # The committed context holds the sentence once, as one user turn.
    assert len(turns[-1]) == 1
    # The bot spoke only after the caller finished (never into the pause).
    assert answered_after > 0


async def test_without_speculation_the_llm_is_asked_once_the_turn_ends(cloud_services, voice_cache):
    requests, answered_after, _, _ = await place_call(
        cloud_services, voice_cache, pause=1.0, speculative_llm=False
    )
    turns = [user_messages(r) for r in requests if r.get("stream")]
    print(turns, f"answered {answered_after:.2f} s after the sentence")
    assert len(turns) == 1 and len(turns[0]) == 1
    assert "chicago" in turns[0][0].lower() and answered_after > 0
