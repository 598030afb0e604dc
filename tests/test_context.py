"""Multi-turn context: earlier turns reach the LLM, and long calls are summarized."""

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.standins import Text
from pipelines.assistant import run


async def test_earlier_turns_are_sent_and_long_calls_are_summarized(cloud_services, voice_cache):
    cloud_services.llm.script(
        Text("Nice to meet you, Priya."),
        Text("Hiking is a lovely hobby."),
        Text("You told me your name is Priya."),
    )
    bot = cloud_services.bot(context_max_messages=4)
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                [
                    "My name is Priya.",
                    "I love hiking.",
                    "What is my name?",
                    "Thank you very much.",
                ],
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()

    chats = [r for r in cloud_services.llm.requests if r.get("stream")]
    third = chats[2]["messages"]
    said = [m["content"] for m in third if m["role"] == "user"]
    assert "my name is priya" in said[0].lower()
    assert any(m["role"] == "assistant" and "Priya" in str(m["content"]) for m in third)

    summaries = [
        r
        for r in cloud_services.llm.requests
        if "summarizing a conversation" in str(r["messages"]).lower()
    ]
    assert summaries, "no summarization request reached the LLM"
    last = chats[-1]["messages"]
    assert any("Conversation summary:" in str(m["content"]) for m in last)
