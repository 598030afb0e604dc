"""`mindbot export` and `mindbot forget` on a real call's data."""

import csv
import io
import json

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.standins import Text
from pipelines.assistant import run

from conftest import mindbot, wait_until

PHONE = "+15550109999"


async def _a_call_from_priya(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Nice to meet you, Priya. Hiking sounds wonderful."))
    bot = cloud_services.bot()
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["My name is Priya and I love hiking."],
                from_number=PHONE,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions)
    finally:
        bot.stop()
    return bot.settings.data_dir


async def test_export_in_every_format(cloud_services, voice_cache):
    data_dir = await _a_call_from_priya(cloud_services, voice_cache)

    exported = mindbot(data_dir, "export", "--user", PHONE, "--format", "json")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["identities"][0]["value"] == PHONE
    turns = data["sessions"][0]["turns"]
    assert any("priya" in t["text"].lower() for t in turns if t["role"] == "user")

    markdown = mindbot(data_dir, "export", "--user", PHONE, "--format", "md").stdout
    assert "**MindBot:** Nice to meet you, Priya." in markdown

    rows = list(
        csv.DictReader(
            io.StringIO(mindbot(data_dir, "export", "--user", PHONE, "--format", "csv").stdout)
        )
    )
    assert [r["role"] for r in rows] == ["assistant", "user", "assistant"]
    assert rows[2]["text"] == "Nice to meet you, Priya. Hiking sounds wonderful."


async def test_forget_leaves_no_trace_in_the_data_directory(cloud_services, voice_cache):
    data_dir = await _a_call_from_priya(cloud_services, voice_cache)
    forgot = mindbot(data_dir, "forget", "--user", PHONE)
    assert forgot.returncode == 0, forgot.stderr

    for path in data_dir.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert PHONE.encode() not in raw, path
            assert b"Priya" not in raw and b"priya" not in raw, path
    again = mindbot(data_dir, "export", "--user", PHONE)
    assert again.returncode == 2 and again.stderr.startswith("mindbot: ")


def test_an_unknown_user_is_one_clear_line(tmp_path):
    for command in (["export", "--user", "+15550000000"], ["forget", "--user", "42"]):
        result = mindbot(tmp_path, *command)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "No user" in result.stderr
