"""A user's data through the REST API: read, preferences, GDPR export and erasure, each access
audited without the personal data itself."""

from __future__ import annotations

import csv
import io
import json

from api_helpers import api_client, new_key

from mindbot.storage import MemoryRecord, SessionRecord, TurnRecord

PHONE = "+15550106060"
NAME = "Ottoline"
SECRET_TEXT = "my locker code is 4711"


def a_user_with_a_call(storage) -> int:
    user = storage.user_for_identity("phone", PHONE, display_name=NAME)
    storage.start_session(SessionRecord("users-call", user.id, "twilio", "assistant", "mindbot"))
    storage.add_turns(
        [
            TurnRecord("users-call", 0, "assistant", "Hi, I'm MindBot."),
            TurnRecord("users-call", 1, "user", SECRET_TEXT),
            TurnRecord("users-call", 2, "assistant", "Noted.", latency_secs=0.3),
        ]
    )
    storage.end_session("users-call", "completed")
    storage.add_memory(MemoryRecord(user.id, f"{NAME} keeps a locker", "fact", 0.9))
    return user.id


async def test_a_user_is_read_and_their_preferences_changed(cloud_services):
    bot = cloud_services.bot()
    try:
        user_id = a_user_with_a_call(bot.storage)
        reader = new_key(bot, ["read"])
        writer = new_key(bot, ["write"], name="support")
        async with api_client(bot) as client:
            user = (await client.get(f"/api/v1/users/{user_id}", headers=reader)).json()
            assert user["display_name"] == NAME and user["sessions"] == 1
            assert user["identities"] == [{"kind": "phone", "value": PHONE}]
            assert (await client.get("/api/v1/users/999", headers=reader)).status_code == 404
            assert (await client.get("/api/v1/users/abc", headers=reader)).status_code == 422

            path = f"/api/v1/users/{user_id}/preferences"
            changes = {
                "speaking_rate": "fast",
                "language": "French",
                "timezone": "Europe/Paris",
                "memory": False,
                "voice": "en_GB-alan-medium",
            }
            assert (await client.patch(path, json=changes, headers=reader)).status_code == 403
            updated = await client.patch(path, json=changes, headers=writer)
            assert updated.status_code == 200
            assert updated.json() == {
                "speaking_rate": 1.15,
                "language": "fr",
                "timezone": "Europe/Paris",
                "memory": False,
                "voice": "en_GB-alan-medium",
            }
            woken = await client.patch(path, json={"wake_phrase": "hey  jarvis"}, headers=writer)
            assert woken.json()["wake_phrase"] == "hey jarvis"
            slower = await client.patch(path, json={"speaking_rate": 0.9}, headers=writer)
            assert slower.json()["speaking_rate"] == 0.9 and slower.json()["language"] == "fr"

            for bad, field in (
                ({"language": "Klingon"}, "language"),
                ({"speaking_rate": "warp"}, "speaking_rate"),
                ({"speaking_rate": 3}, "speaking_rate"),
                ({"timezone": "Mars/Olympus"}, "timezone"),
                ({"voice": "v" * 101}, "voice"),
                ({"wake_phrase": "computer"}, "wake_phrase"),
                ({"memory": "sometimes"}, "memory"),
                ({"colour": "blue"}, "colour"),
            ):
                refused = await client.patch(path, json=bad, headers=writer)
                assert refused.status_code == 422, bad
                assert refused.json()["detail"][0]["loc"] == ["body", field]
            empty = await client.patch(path, json={}, headers=writer)
            assert empty.status_code == 422 and "at least one" in empty.json()["detail"]
            unknown = await client.patch(
                "/api/v1/users/999/preferences", json=changes, headers=writer
            )
            assert unknown.status_code == 404
        assert bot.storage.preferences(user_id)["speaking_rate"] == 0.9
        audit = bot.storage.access_audit(user_id=user_id)
    finally:
        bot.stop()
    assert [(row.action, row.actor) for row in audit] == [
        ("user.preferences_updated", "support"),
        ("user.preferences_updated", "support"),
        ("user.preferences_updated", "support"),
        ("user.read", "test"),
    ]
    assert audit[1].detail == {"keys": ["wake_phrase"]}
    assert audit[2].detail == {"keys": ["language", "memory", "speaking_rate", "timezone", "voice"]}


async def test_a_user_is_exported_in_every_format_then_erased(cloud_services):
    bot = cloud_services.bot()
    try:
        user_id = a_user_with_a_call(bot.storage)
        admin = new_key(bot, ["admin"], name="dpo")
        writer = new_key(bot, ["write"])
        async with api_client(bot) as client:
            export = f"/api/v1/users/{user_id}/export"
            assert (await client.get(export, headers=writer)).status_code == 403
            as_json = await client.get(export, headers=admin)
            assert as_json.headers["content-type"] == "application/json"
            data = as_json.json()
            assert data["identities"][0]["value"] == PHONE
            assert data["sessions"][0]["turns"][1]["text"] == SECRET_TEXT
            assert data["memories"][0]["text"] == f"{NAME} keeps a locker"

            markdown = await client.get(export, params={"format": "md"}, headers=admin)
            assert f"**Caller:** {SECRET_TEXT}" in markdown.text
            table = await client.get(export, params={"format": "csv"}, headers=admin)
            rows = list(csv.DictReader(io.StringIO(table.text)))
            assert [r["role"] for r in rows] == ["assistant", "user", "assistant"]
            bad = await client.get(export, params={"format": "pdf"}, headers=admin)
            assert bad.status_code == 422

            assert (
                await client.delete(f"/api/v1/users/{user_id}", headers=writer)
            ).status_code == 403
            erased = await client.delete(f"/api/v1/users/{user_id}", headers=admin)
            assert erased.json() == {"user_id": user_id, "erased": True}
            gone = await client.get(f"/api/v1/users/{user_id}", headers=admin)
            assert gone.status_code == 404
            assert (
                await client.delete(f"/api/v1/users/{user_id}", headers=admin)
            ).status_code == 404
            missing = await client.get("/api/v1/sessions/users-call", headers=admin)
            assert missing.status_code == 404

            audit = (await client.get("/api/v1/audit", headers=admin)).json()
        path = bot.storage.path
    finally:
        bot.stop()
    assert [row["action"] for row in audit] == [
        "user.erased",
        "user.exported",
        "user.exported",
        "user.exported",
    ]
    assert [row["detail"] for row in audit[1:]] == [
        {"format": "csv"},
        {"format": "md"},
        {"format": "json"},
    ]
    # The trail outlives the erasure, unlinked from the user, and never held their data.
    assert {row["user_id"] for row in audit} == {None}
    assert len({row["erasure_id"] for row in audit}) == 1 and audit[0]["erasure_id"]
    text = json.dumps(audit)
    assert PHONE not in text and NAME not in text and "locker" not in text
    stored = b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))
    assert PHONE.encode() not in stored and SECRET_TEXT.encode() not in stored
