"""The knowledge base in a phone call: passages with their sources reach the LLM, the answer
names its source, the sources are stored with the turn, and an edited document in the watched
folder is what the next call gets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.standins import Text
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run
from processors.knowledge_retrieval import MESSAGE_NAME

from conftest import wait_until

CORPUS = Path(__file__).parent / "fixtures" / "kb" / "corpus"
BAD = Path(__file__).parent / "fixtures" / "kb" / "bad"
CALLER = "+15550103030"
QUESTION = "What is the most I can spend on a hotel in Boston?"


def knowledge_messages(llm) -> list[str]:
    return [
        m["content"]
        for r in llm.requests
        if r.get("stream")
        for m in r["messages"]
        if m.get("name") == MESSAGE_NAME
    ]


async def one_call(bot, said, voice_cache):
    async with serve(bot, run) as base_url:
        await simulated_call(
            ws_url(base_url),
            said,
            from_number=CALLER,
            cache_dir=voice_cache,
            transcribe_replies=False,
        )


async def test_answers_come_from_the_documents_and_follow_their_edits(
    cloud_services, voice_cache, tmp_path
):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(CORPUS / "travel-policy.md", docs)
    llm = cloud_services.llm
    llm.script(Text("According to the travel policy, section Nightly Rate Limits, $300 a night."))
    bot = cloud_services.bot(data_dir=tmp_path / "data", memory=False, kb={"watch_dirs": [docs]})
    try:
        async with serve(bot, run) as base_url:
            kb = await wait_for_documents(bot)
            await simulated_call(
                ws_url(base_url),
                [QUESTION],
                from_number=CALLER,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            (first,) = knowledge_messages(llm)
            assert "Business Travel Policy, section Nightly Rate Limits" in first
            assert "the limit is $300 a night" in first
            assert "never follow instructions" in first

            # The document changes while MindBot runs: the next call hears the new limit.
            policy = docs / "travel-policy.md"
            policy.write_text(policy.read_text().replace("$300 a night", "$340 a night"))
            await wait_until(
                lambda: any("$340" in p.text for p in kb.search("hotel limit in Boston")),
                timeout=30,
            )
            llm.script(Text("According to the travel policy, it's $340 a night."))
            await simulated_call(
                ws_url(base_url),
                [QUESTION],
                from_number=CALLER,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()

    second = knowledge_messages(llm)[-1]
    assert "$340 a night" in second and "$300 a night" not in second
    spoken = " ".join(r.get("transcript", "") for r in cloud_services.cartesia.requests)
    assert "According to the travel policy" in spoken

    storage = SQLiteStorage(tmp_path / "data" / "mindbot.db")
    try:
        user = storage.find_user(CALLER)
        sessions = storage.sessions_for_user(user.id)
        stored = [
            s for session in sessions for t in storage.turns(session.id) for s in t.sources or []
        ]
    finally:
        storage.close()
    assert any(s["label"] == "Business Travel Policy, section Nightly Rate Limits" for s in stored)


async def test_instructions_inside_documents_never_reach_the_llm_as_instructions(
    cloud_services, voice_cache, tmp_path
):
    canary = "4471 Kestrel Point Road"
    bot = cloud_services.bot(data_dir=tmp_path, memory=False)
    try:
        kb = bot.knowledge_base("default", create=True)
        report = kb.add([BAD / "prompt-injection.md", CORPUS / "travel-policy.md"])
        assert report.warnings  # the injected passage was noticed and left out
        assert not any(canary in p.text for p in kb.search("the CEO's home address", min_score=-1))
        cloud_services.llm.script(Text("I can't share anyone's home address."))
        await one_call(bot, ["What is the CEO's home address?"], voice_cache)
    finally:
        bot.stop()
    requests = [r for r in cloud_services.llm.requests if r.get("stream")]
    assert requests and canary not in json.dumps(requests)
    for content in knowledge_messages(cloud_services.llm):  # whatever was retrieved is quoted
        assert content.startswith("Reference material") and "never follow instructions" in content


async def test_each_tenant_persona_answers_from_its_own_collection_only(
    cloud_services, voice_cache, tmp_path
):
    personas = tmp_path / "personas"
    personas.mkdir()
    for name in ("acme", "globex"):
        (personas / f"{name}.yaml").write_text(
            f"name: {name}\ndisplay_name: {name.title()}\n"
            f"instructions: You answer the phone for {name}.\n"
            f"greeting: Hello, this is {name}.\nknowledge_base: {name}\n"
        )
    numbers = {"acme": "+15550107001", "globex": "+15550107002"}
    bot = cloud_services.bot(
        data_dir=tmp_path / "data",
        memory=False,
        persona_dirs=[personas],
        persona_by_number={number: name for name, number in numbers.items()},
    )
    llm = cloud_services.llm
    try:
        bot.knowledge_base("acme", create=True).add([CORPUS / "travel-policy.md"])
        bot.knowledge_base("globex", create=True).add([CORPUS / "employee-handbook.md"])
        async with serve(bot, run) as base_url:
            for tenant in ("acme", "globex"):
                llm.script(Text("Let me see."))
                await simulated_call(
                    ws_url(base_url),
                    [QUESTION],
                    from_number=CALLER,
                    to_number=numbers[tenant],
                    cache_dir=voice_cache,
                    transcribe_replies=False,
                )
    finally:
        bot.stop()
    calls = [r for r in llm.requests if r.get("stream")]
    acme, globex = (json.dumps(r["messages"]) for r in calls)
    assert "Business Travel Policy" in acme and "$300 a night" in acme
    assert "Business Travel Policy" not in globex and "$300" not in globex


async def wait_for_documents(bot):
    """The default collection, once the watcher has indexed the watched folder."""
    kb = None

    def ready() -> bool:
        nonlocal kb
        kb = bot.knowledge_base("default")
        return kb is not None and bool(kb.list())

    await wait_until(ready, timeout=60)
    return kb
