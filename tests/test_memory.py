"""Cross-session memory: a returning caller is greeted by name and the LLM knows them."""

import json

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.memory import MEMORY_PREFERENCE
from mindbot.runtime import MindBot
from mindbot.standins import Text, ToolCall, ToolCalls
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run

from conftest import make_settings

PRIYA = "+15550104242"
LEARNED = json.dumps(
    {
        "summary": "Priya introduced herself and talked about hiking.",
        "name": "Priya",
        "facts": [{"text": "Loves hiking", "turn": 1, "confidence": 0.9}],
    }
)


async def _call(cloud_services, data_dir, voice_cache, said):
    bot = MindBot(make_settings(**cloud_services.settings, data_dir=data_dir))
    bot.start()
    try:
        async with serve(bot, run) as base_url:
            report = await simulated_call(
                ws_url(base_url),
                said,
                from_number=PRIYA,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()
    return report


async def test_a_returning_caller_is_greeted_by_name_and_remembered(
    cloud_services, voice_cache, tmp_path
):
    llm, cartesia = cloud_services.llm, cloud_services.cartesia
    llm.script(Text("Nice to meet you, Priya!"), Text(LEARNED), Text("How was the hike?"))
    await _call(cloud_services, tmp_path, voice_cache, ["My name is Priya and I love hiking."])
    learn_request = llm.requests[1]
    assert not learn_request.get("stream")
    assert "my name is priya" in json.dumps(learn_request["messages"]).lower()

    greetings_before = len(cartesia.requests)
    await _call(cloud_services, tmp_path, voice_cache, ["Guess what I did today?"])
    greeting = cartesia.requests[greetings_before]["transcript"].strip()
    assert greeting == "Welcome back, Priya! How can I help you today?"
    answer_request = [r for r in llm.requests if r.get("stream")][-1]
    instruction = answer_request["messages"][0]["content"]
    assert "Priya" in instruction and "Loves hiking" in instruction


async def test_with_memory_off_nothing_is_learned_or_recalled(
    cloud_services, voice_cache, tmp_path
):
    bot = MindBot(make_settings(**cloud_services.settings, data_dir=tmp_path))
    user = bot.storage_for_tests() if hasattr(bot, "storage_for_tests") else None
    assert user is None

    storage = SQLiteStorage(tmp_path / "mindbot.db")
    priya = storage.user_for_identity("phone", PRIYA)
    storage.set_preference(priya.id, MEMORY_PREFERENCE, False)
    storage.close()

    llm = cloud_services.llm
    llm.script(Text("Nice to meet you."), Text(LEARNED), Text("Hello again."))
    await _call(cloud_services, tmp_path, voice_cache, ["My name is Priya and I love hiking."])
    await _call(cloud_services, tmp_path, voice_cache, ["Do you remember me?"])

    assert all(r.get("stream") for r in llm.requests), "a memory request was made"
    storage = SQLiteStorage(tmp_path / "mindbot.db")
    assert storage.memories(priya.id, include_expired=True) == []
    storage.close()
    last = [r for r in llm.requests if r.get("stream")][-1]
    assert "Priya" not in last["messages"][0]["content"]
    first = cloud_services.cartesia.requests
    assert all("Welcome back" not in r.get("transcript", "") for r in first)


async def test_the_caller_controls_memory_by_voice(cloud_services, voice_cache, tmp_path):
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("remember", {"fact": "Favourite colour is green"})]),
        Text("I'll remember that."),
        ToolCalls([ToolCall("recall_memories", {})]),
        Text("You told me your favourite colour is green."),
        ToolCalls([ToolCall("forget", {"about": "favourite colour"})]),
        Text("Done, I've forgotten it."),
    )
    await _call(
        cloud_services,
        tmp_path,
        voice_cache,
        [
            "Please remember that my favourite colour is green.",
            "What do you know about me?",
            "Forget my favourite colour.",
        ],
    )
    chats = [r for r in llm.requests if r.get("stream")]
    offered = {tool["function"]["name"] for tool in chats[0]["tools"]}
    assert {"set_preference", "remember", "forget", "recall_memories"} <= offered
    results = [
        json.loads(m["content"]) for r in chats for m in r["messages"] if m["role"] == "tool"
    ]
    assert {"remembered": "Favourite colour is green"} in results
    assert {"name": None, "memories": ["Favourite colour is green"]} in results
    assert {"forgotten": 1} in results

    storage = SQLiteStorage(tmp_path / "mindbot.db")
    priya = storage.find_user(PRIYA)
    assert all("green" not in m.text for m in storage.memories(priya.id, include_expired=True))
    storage.close()


async def test_the_caller_turns_memory_off_and_sets_their_name_by_voice(
    cloud_services, voice_cache, tmp_path
):
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("set_preference", {"preference": "name", "value": "Pri"})]),
        Text("Sure, Pri."),
        ToolCalls([ToolCall("set_preference", {"preference": "memory", "value": "off"})]),
        Text("I won't remember you from now on."),
        ToolCalls([ToolCall("set_preference", {"preference": "shoe size", "value": "9"})]),
        Text("I can't change that."),
    )
    await _call(
        cloud_services,
        tmp_path,
        voice_cache,
        ["Please call me Pri.", "Stop remembering me.", "Set my shoe size to nine."],
    )
    chats = [r for r in llm.requests if r.get("stream")]
    results = [json.loads(m["content"]) for m in chats[-1]["messages"] if m["role"] == "tool"]
    assert results[0] == {"name": "Pri"} and results[1] == {"memory": "off"}
    assert "unknown preference" in results[2]["error"]
    assert all(r.get("stream") for r in llm.requests), "memory was learned although turned off"

    storage = SQLiteStorage(tmp_path / "mindbot.db")
    priya = storage.find_user(PRIYA)
    assert storage.preferences(priya.id) == {"name": "Pri", MEMORY_PREFERENCE: False}
    storage.close()


async def test_the_memory_loop_runs_on_the_offline_llm(offline_bot, voice_cache):
    """SmolLM2 through llama.cpp learns the caller's name (its reply constrained to the JSON
    shape by the server's grammar), and the next call greets them by it."""
    caller = "+15550108888"

    async def phone(said):
        async with serve(offline_bot, run) as base_url:  # waits for learning to finish
            return await simulated_call(
                ws_url(base_url), said, from_number=caller, cache_dir=voice_cache
            )

    await phone(["My name is Priya and I love hiking."])
    storage = offline_bot.storage
    priya = storage.find_user(caller)
    assert storage.preferences(priya.id).get("name") == "Priya"
    assert storage.memories(priya.id)  # a summary and facts, with their session
    report = await phone(["Hello again."])
    assert (
        "priya" in report.greeting.heard.lower() or "welcome back" in report.greeting.heard.lower()
    )
