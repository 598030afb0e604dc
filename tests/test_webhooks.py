"""Outbound webhooks: signatures, the subscription routes, and delivery to a real receiver on
loopback (``servers/webhook_receiver.py``): events of a simulated phone call, retries through
a failure and a timeout, a give-up, a slow receiver beside a fast one, and a restart."""

from __future__ import annotations

import asyncio
import json

import pytest
from api_helpers import api_client, new_key, poll
from pydantic import ValidationError

from mindbot.config import Settings
from mindbot.harness import free_port, simulated_call, ws_url
from mindbot.standins import Text, ToolCall, ToolCalls
from mindbot.storage import SessionRecord, SQLiteStorage, TurnRecord
from mindbot.webhooks import (
    EVENT_TYPES,
    WebhookDispatcher,
    WebhookSettings,
    new_secret,
    sign,
    verify_signature,
)

from conftest import wait_until
from servers.webhook_receiver import Accept, Fail, Hang, WebhookReceiver, check_signature

CALLER = "+15550108888"
FAST = {
    "timeout_secs": 1.0,
    "base_delay_secs": 0.1,
    "backoff_factor": 2.0,
    "max_delay_secs": 0.5,
    "poll_interval_secs": 0.2,
    "lease_secs": 5.0,
}


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


async def subscribe(client, admin, receiver, events, path="/hook") -> dict:
    """Subscribe ``receiver``'s ``path`` through the API; the receiver checks with its secret."""
    response = await client.post(
        "/api/v1/webhooks", json={"url": receiver.url(path), "events": events}, headers=admin
    )
    assert response.status_code == 201, response.text
    created = response.json()
    receiver.secrets[path] = created["secret"]
    return created


async def ping(client, admin, subscription_id) -> int:
    response = await client.post(f"/api/v1/webhooks/{subscription_id}/ping", headers=admin)
    assert response.status_code == 202, response.text
    return response.json()["outbox_id"]


async def deliveries(client, reader, subscription_id, **params) -> list[dict]:
    response = await client.get(
        f"/api/v1/webhooks/{subscription_id}/deliveries", params=params, headers=reader
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


# -- signing -------------------------------------------------------------------------------------


def test_a_signature_verifies_only_the_same_recent_body_with_the_same_secret():
    secret, body = new_secret(), b'{"id":7,"type":"ping","data":{}}'
    assert secret.startswith("whsec_") and len(secret) > 40 and secret != new_secret()
    header = sign(secret, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    now = 1_700_000_000 + 299
    assert verify_signature(secret, header, body, now=now)
    assert verify_signature(secret, header, body.decode(), now=now)  # str bodies too
    assert not verify_signature(secret, header, body.replace(b"7", b"8"), now=now)  # tampered
    assert not verify_signature(new_secret(), header, body, now=now)  # another secret
    assert not verify_signature(secret, header, body, now=1_700_000_000 + 301)  # replayed late
    assert not verify_signature(secret, header, body, now=1_700_000_000 - 301)  # from the future
    assert verify_signature(secret, header, body, tolerance_secs=3600, now=now + 3000)
    forged_time = header.replace("t=1700000000", f"t={now}")  # a fresh t on an old signature
    assert not verify_signature(secret, forged_time, body, now=now)
    rotated = f"t=1700000000,v1={'0' * 64},{header.split(',')[1]}"  # any v1 may match
    assert verify_signature(secret, rotated, body, now=now)
    for broken in (None, "", "v1=abc", "t=1700000000", "t=soon,v1=ab", "garbage"):
        assert not verify_signature(secret, broken, body, now=now), broken
    # The receiver's own implementation of the documented format agrees with MindBot's.
    assert check_signature(secret, sign(secret, body), body)
    assert not check_signature(secret, sign(secret, body), body + b" ")


def test_backoff_grows_to_its_cap_with_jitter_and_settings_are_checked(monkeypatch):
    settings = WebhookSettings(base_delay_secs=2, backoff_factor=3, max_delay_secs=50, jitter=0.5)
    assert [settings.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 400)] == [2, 6, 18, 50, 50]
    assert settings.delay(2, rand=lambda: 1.0) == 3.0  # jitter shortens by up to half
    with pytest.raises(ValidationError, match="lease_secs must be longer than timeout_secs"):
        WebhookSettings(timeout_secs=30, lease_secs=20)
    with pytest.raises(ValidationError):
        WebhookSettings(max_attempts=0)
    monkeypatch.setenv("MINDBOT_WEBHOOKS__MAX_ATTEMPTS", "4")
    monkeypatch.setenv("MINDBOT_WEBHOOKS__TIMEOUT_SECS", "2.5")
    from_env = Settings(_env_file=None).webhooks
    assert (from_env.max_attempts, from_env.timeout_secs) == (4, 2.5)


# -- the outbox in storage -----------------------------------------------------------------------


def test_tool_calls_are_queued_with_their_turn_without_what_was_said(tmp_path):
    storage = SQLiteStorage(tmp_path / "mindbot.db")
    try:
        tools = storage.add_webhook_subscription("https://a.example/hook", ["tool.called"], "s1")
        storage.add_webhook_subscription("https://b.example/hook", ["session.ended"], "s2")
        user = storage.user_for_identity("phone", CALLER)
        storage.start_session(SessionRecord("call-1", user.id, "twilio", "assistant", "mindbot"))
        email = {
            "name": "send_email",
            "arguments": {"to": "sam@example.com", "body": "I'll be ten minutes late."},
            "status": "error",
            "duration_ms": 41.5,
            "attempts": 1,
            "confirmed": True,
            "result": {"ok": False, "error": "unavailable", "message": "SMTP said no to sam"},
            "started_at": "2025-05-01T10:00:00.000000+00:00",
        }
        sum_ = {**email, "name": "calculate", "status": "ok", "result": {"ok": True, "result": 4}}
        reply = TurnRecord("call-1", 1, "assistant", "Done.", tool_calls=[email, sum_])
        storage.add_turn(TurnRecord("call-1", 0, "user", "Email Sam that I'm late"))
        storage.add_turn(reply)

        rows = storage.outbox(event_type="tool.called")
        assert [r.subscription_id for r in rows] == [tools.id, tools.id]
        first, second = (r.payload for r in rows)
        assert first == {
            "session": {"id": "call-1", "user_id": user.id},
            "turn_idx": 1,
            "tool": {
                "name": "send_email",
                "status": "error",
                "error": "unavailable",
                "duration_ms": 41.5,
                "attempts": 1,
                "confirmed": True,
                "started_at": "2025-05-01T10:00:00.000000+00:00",
            },
        }
        assert second["tool"]["name"] == "calculate" and second["tool"]["error"] is None
        text = json.dumps([r.payload for r in rows])
        assert "sam@" not in text and "ten minutes" not in text and "SMTP" not in text

        # One transaction: a turn that cannot be stored queues nothing.
        with pytest.raises(Exception, match="UNIQUE"):
            storage.add_turn(reply)
        assert len(storage.outbox(event_type="tool.called")) == 2

        # A claim leaves each subscription at most its share of rows in flight.
        storage.add_outbox_row(tools.id, "ping", {})
        claimed = storage.claim_webhook_outbox(limit=10, per_subscription=2, in_flight={})
        assert len(claimed) == 2 and storage.next_outbox_due() is not None
        assert storage.claim_webhook_outbox(per_subscription=2, in_flight={tools.id: 2}) == []

        storage.erase_user(user.id)  # erasure takes the user's tool events with it
        assert storage.outbox(event_type="tool.called") == []
    finally:
        storage.close()


# -- the routes ----------------------------------------------------------------------------------


async def test_subscriptions_are_created_listed_pinged_and_deleted(cloud_services, receiver):
    bot = cloud_services.bot(webhooks=FAST)
    try:
        admin, reader = new_key(bot, ["admin"], name="ops"), new_key(bot, ["read"])
        async with api_client(bot) as client:
            created = await subscribe(client, admin, receiver, ["session.ended", "alert"])
            assert created["secret"].startswith("whsec_")
            assert created["events"] == ["session.ended", "alert"] and created["active"] is True

            listed = await client.get("/api/v1/webhooks", headers=reader)
            assert listed.status_code == 200
            assert [w["id"] for w in listed.json()] == [created["id"]]
            assert "secret" not in listed.json()[0] and created["secret"] not in listed.text

            outbox_id = await ping(client, admin, created["id"])
            await wait_until(lambda: receiver.requests(), timeout=15)
            (got,) = receiver.requests()
            assert got.signature_valid is True and got.event_type == "ping"
            assert got.delivery_id == str(outbox_id)
            assert got.event["data"]["subscription_id"] == created["id"]
            assert got.headers["content-type"] == "application/json"
            assert verify_signature(created["secret"], got.headers["mindbot-signature"], got.body)

            async def log():
                return await deliveries(client, reader, created["id"])

            (attempt,) = await poll(log, bool)
            assert (attempt["outbox_id"], attempt["event_type"]) == (outbox_id, "ping")
            assert attempt["ok"] is True and attempt["status_code"] == 200
            assert attempt["error"] is None and attempt["duration_ms"] >= 0

            bad_bodies = [
                {"url": "ftp://example.com/hook", "events": ["alert"]},
                {"url": "not a url", "events": ["alert"]},
                {"url": "https://", "events": ["alert"]},
                {"url": "http://example.com:99999999/", "events": ["alert"]},
                {"url": "https://user:pw@example.com/hook", "events": ["alert"]},
                {"url": "https://example.com/hook", "events": ["call.started"]},
                {"url": "https://example.com/hook", "events": []},
                {"url": "https://example.com/hook"},
                {"url": "https://example.com/hook", "events": ["alert"], "secret": "mine"},
            ]
            for body in bad_bodies:
                response = await client.post("/api/v1/webhooks", json=body, headers=admin)
                assert response.status_code == 422, (body, response.text)
            body = {"url": receiver.url(), "events": ["alert"]}
            assert (await client.post("/api/v1/webhooks", json=body)).status_code == 401
            as_reader = await client.post("/api/v1/webhooks", json=body, headers=reader)
            assert as_reader.status_code == 403 and "admin" in as_reader.json()["detail"]
            hook = f"/api/v1/webhooks/{created['id']}"
            assert (await client.delete(hook, headers=reader)).status_code == 403
            assert (await client.post(f"{hook}/ping", headers=reader)).status_code == 403
            assert (await client.get("/api/v1/webhooks")).status_code == 401
            for missing in ("/api/v1/webhooks/999/deliveries", "/api/v1/webhooks/999/ping"):
                method = client.get if missing.endswith("deliveries") else client.post
                assert (await method(missing, headers=admin)).status_code == 404

            spec = (await client.get("/openapi.json")).json()
            schema = spec["components"]["schemas"]["WebhookIn"]
            assert set(schema["properties"]["events"]["items"]["enum"]) == set(EVENT_TYPES)
            assert "secret" in spec["components"]["schemas"]["WebhookCreated"]["properties"]

            assert (await client.delete(hook, headers=admin)).status_code == 204
            assert (await client.delete(hook, headers=admin)).status_code == 404
            assert (await client.get(f"{hook}/deliveries", headers=reader)).status_code == 404
            assert (await client.get("/api/v1/webhooks", headers=reader)).json() == []
    finally:
        bot.stop()


# -- delivery ------------------------------------------------------------------------------------


async def test_a_phone_call_delivers_signed_session_and_tool_events(
    cloud_services, voice_cache, receiver
):
    cloud_services.llm.script(
        ToolCalls([ToolCall("calculate", {"expression": "12.5 * 3"})]),
        Text("Twelve and a half times three is thirty seven and a half."),
    )
    bot = cloud_services.bot(webhooks=FAST)
    try:
        admin = new_key(bot, ["admin"])
        async with api_client(bot) as client:
            sessions = await subscribe(
                client, admin, receiver, ["session.started", "session.ended"], path="/sessions"
            )
            await subscribe(client, admin, receiver, ["tool.called"], path="/tools")
            await simulated_call(
                ws_url(str(client.base_url).rstrip("/")),
                ["What is twelve and a half times three?"],
                from_number=CALLER,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: len(receiver.requests("/sessions")) >= 2, timeout=30)
            await wait_until(lambda: receiver.requests("/tools"), timeout=15)
        session_id = receiver.requests("/sessions")[0].event["data"]["session"]["id"]
        turns = bot.storage.turns(session_id)
    finally:
        bot.stop()

    started, ended = receiver.requests("/sessions")
    (tool,) = receiver.requests("/tools")
    assert all(r.signature_valid for r in receiver.received)
    assert [r.event_type for r in (started, ended, tool)] == [
        "session.started",
        "session.ended",
        "tool.called",
    ]
    session = started.event["data"]["session"]
    assert session["transport"] == "twilio" and session["persona"] == "mindbot"
    assert ended.event["data"]["session"]["id"] == session["id"]
    assert ended.event["data"]["session"]["end_reason"] == "completed"
    summary = ended.event["data"]["summary"]
    assert summary["turns"] == len(turns) >= 3 and summary["duration_secs"] > 0
    data = tool.event["data"]
    assert data["session"] == {"id": session["id"], "user_id": session["user_id"]}
    assert data["tool"]["name"] == "calculate" and data["tool"]["status"] == "ok"
    (with_tool,) = [t for t in turns if t.tool_calls]
    assert data["turn_idx"] == with_tool.idx and data["tool"]["duration_ms"] >= 0
    assert "12.5" not in tool.body.decode() and "37.5" not in tool.body.decode()
    assert CALLER not in json.dumps([r.body.decode() for r in receiver.received])
    assert len({r.delivery_id for r in receiver.received}) == 3
    assert started.event["id"] == int(started.delivery_id)
    assert sessions["events"] == ["session.started", "session.ended"]


async def test_a_receiver_that_fails_then_hangs_gets_the_event_once(cloud_services, receiver):
    receiver.script(Fail(500), Hang(30), Accept(204))
    bot = cloud_services.bot(webhooks=FAST)
    try:
        admin, reader = new_key(bot, ["admin"]), new_key(bot, ["read"])
        async with api_client(bot) as client:
            hook = await subscribe(client, admin, receiver, ["alert"])
            outbox_id = await ping(client, admin, hook["id"])

            async def log():
                return await deliveries(client, reader, hook["id"])

            attempts = await poll(log, lambda items: items and items[0]["ok"], timeout=30)
            await asyncio.sleep(3 * FAST["poll_interval_secs"])  # a 4th attempt would show now
            attempts = await log()
            assert len(receiver.requests()) == 3
    finally:
        bot.stop()
    assert [r.answer for r in receiver.received] == ["500", "hang", "204"]
    assert {r.delivery_id for r in receiver.received} == {str(outbox_id)}
    assert len({r.body for r in receiver.received}) == 1  # the same event each time
    assert len({r.headers["mindbot-signature"] for r in receiver.received}) >= 2  # re-signed
    assert all(r.signature_valid for r in receiver.received)
    assert [(a["ok"], a["status_code"]) for a in attempts] == [
        (True, 204),
        (False, None),
        (False, 500),
    ]
    assert attempts[1]["error"] == "timed out after 1 s"
    assert attempts[2]["error"] == "HTTP 500"
    assert attempts[0]["at"] > attempts[1]["at"] > attempts[2]["at"]  # newest first


async def test_deliveries_page_newest_first(cloud_services, receiver):
    receiver.script(Fail(503), Fail(503), Fail(503), Accept())
    bot = cloud_services.bot(webhooks=FAST)
    try:
        admin, reader = new_key(bot, ["admin"]), new_key(bot, ["read"])
        async with api_client(bot) as client:
            hook = await subscribe(client, admin, receiver, ["alert"])
            await ping(client, admin, hook["id"])
            await wait_until(lambda: len(receiver.requests()) == 4, timeout=30)

            async def all_four():
                return await deliveries(client, reader, hook["id"], limit=50)

            everything = await poll(all_four, lambda items: len(items) == 4)
            first = await client.get(
                f"/api/v1/webhooks/{hook['id']}/deliveries",
                params={"limit": 3},
                headers=reader,
            )
            page = first.json()
            rest = await deliveries(client, reader, hook["id"], limit=3, offset=page["next_offset"])
            bad = await client.get(
                f"/api/v1/webhooks/{hook['id']}/deliveries", params={"limit": 0}, headers=reader
            )
    finally:
        bot.stop()
    assert [a["id"] for a in page["items"] + rest] == [a["id"] for a in everything]
    assert page["next_offset"] == 3 and [a["status_code"] for a in rest] == [503]
    assert everything[0]["ok"] and [a["id"] for a in everything] == sorted(
        (a["id"] for a in everything), reverse=True
    )
    assert bad.status_code == 422


async def test_a_delivery_is_given_up_after_max_attempts(cloud_services, receiver, warnings_logged):
    receiver.script(*[Fail(500)] * 5)
    bot = cloud_services.bot(webhooks={**FAST, "max_attempts": 3})
    try:
        admin = new_key(bot, ["admin"])
        async with api_client(bot) as client:
            hook = await subscribe(client, admin, receiver, ["alert"])
            outbox_id = await ping(client, admin, hook["id"])
            storage = bot.storage

            def given_up():
                (row,) = storage.outbox(event_type="ping")
                return row.next_attempt_at is None

            await wait_until(given_up, timeout=30)
            await asyncio.sleep(3 * FAST["poll_interval_secs"])  # no 4th attempt follows
            (row,) = storage.outbox(event_type="ping")
            attempts = storage.webhook_deliveries(outbox_id)
    finally:
        bot.stop()
    assert len(receiver.requests()) == 3 and len(attempts) == 3
    assert row.delivered_at is None and row.attempts == 3 and row.last_error == "HTTP 500"
    assert [a.status_code for a in attempts] == [500, 500, 500]
    (warning,) = [m for level, m in warnings_logged if "gave up" in m]
    assert f"#{outbox_id}" in warning and "after 3 attempts: HTTP 500" in warning
    assert hook["secret"] not in warning and receiver.url() not in warning


async def test_a_slow_receiver_or_a_bad_url_does_not_hold_up_the_others(cloud_services, receiver):
    receiver.script(Hang(30), Hang(30), Hang(30), path="/slow")
    settings = {**FAST, "timeout_secs": 5.0, "lease_secs": 10.0}
    settings.update(max_concurrent=2, max_per_subscription=1)
    bot = cloud_services.bot(webhooks=settings)
    try:
        admin, reader = new_key(bot, ["admin"]), new_key(bot, ["read"])
        async with api_client(bot) as client:
            slow = await subscribe(client, admin, receiver, ["alert"], path="/slow")
            fast = await subscribe(client, admin, receiver, ["alert"], path="/fast")
            # A URL the API would refuse, stored by an older MindBot or by hand.
            broken = bot.storage.add_webhook_subscription("not a url", ["alert"], "whsec_x")
            for _ in range(3):
                await ping(client, admin, slow["id"])
            await ping(client, admin, broken.id)
            await ping(client, admin, fast["id"])
            await wait_until(lambda: receiver.requests("/fast"), timeout=15)
            # Served while the slow receiver still holds its first request: none of its
            # attempts has ended (timed out) yet, and it got one at a time, its share.
            assert bot.storage.subscription_deliveries(slow["id"]) == []
            assert len(receiver.requests("/slow")) == 1

            async def broken_log():
                return await deliveries(client, reader, broken.id)

            (failed, *_) = await poll(broken_log, bool)
            again = await ping(client, admin, fast["id"])  # the dispatcher is still running
            await wait_until(lambda: len(receiver.requests("/fast")) == 2, timeout=15)
    finally:
        bot.stop()
    assert receiver.requests("/fast")[1].delivery_id == str(again)
    assert failed["ok"] is False and failed["status_code"] is None
    assert failed["error"].startswith("UnsupportedProtocol")


async def test_two_dispatchers_on_one_database_send_each_event_once(tmp_path, receiver):
    storages = [SQLiteStorage(tmp_path / "mindbot.db") for _ in range(2)]
    settings = WebhookSettings(**{**FAST, "max_concurrent": 4, "max_per_subscription": 4})
    dispatchers = [WebhookDispatcher(lambda s=s: s, settings) for s in storages]
    try:
        hook = storages[0].add_webhook_subscription(receiver.url(), ["alert"], new_secret())
        receiver.secrets["/hook"] = hook.secret
        for dispatcher in dispatchers:
            await dispatcher.start()
        queued = [storages[n % 2].add_outbox_row(hook.id, "alert", {"n": n}) for n in range(24)]
        for dispatcher in dispatchers:
            dispatcher.nudge()
        await wait_until(lambda: not storages[0].outbox(pending_only=True), timeout=30)
        await asyncio.sleep(3 * FAST["poll_interval_secs"])  # a double send would show now
    finally:
        for dispatcher in dispatchers:
            await dispatcher.stop()
        for storage in storages:
            storage.close()
    ids = [r.delivery_id for r in receiver.received]
    assert sorted(ids, key=int) == [str(i) for i in queued]  # each once, none twice
    assert all(r.signature_valid for r in receiver.received)


async def test_an_event_pending_at_a_stop_is_delivered_by_the_next_server(cloud_services, tmp_path):
    receiver = WebhookReceiver(port=free_port())  # not listening yet: connections are refused
    first = cloud_services.bot(data_dir=tmp_path, webhooks={**FAST, "base_delay_secs": 0.2})
    try:
        admin = new_key(first, ["admin"])
        async with api_client(first) as client:
            hook = await subscribe(client, admin, receiver, ["session.ended"])
            outbox_id = await ping(client, admin, hook["id"])
            storage = first.storage
            await wait_until(lambda: len(storage.webhook_deliveries(outbox_id)) >= 2, timeout=15)
        (pending,) = storage.outbox(pending_only=True)
        refused = storage.webhook_deliveries(outbox_id)
    finally:
        first.stop()
    assert pending.id == outbox_id and pending.delivered_at is None
    assert all(a.status_code is None and "Connect" in a.error for a in refused)

    with receiver:
        second = cloud_services.bot(data_dir=tmp_path, webhooks=FAST)
        try:
            async with api_client(second):
                await wait_until(lambda: receiver.requests(), timeout=15)
                await wait_until(lambda: not second.storage.outbox(pending_only=True))
            attempts = second.storage.webhook_deliveries(outbox_id)
            (row,) = second.storage.outbox()
        finally:
            second.stop()
    (got,) = receiver.requests()
    assert got.delivery_id == str(outbox_id) and got.signature_valid is True
    assert row.delivered_at is not None and row.attempts == len(attempts)
    assert len(attempts) > len(refused)  # the first server's attempts are kept in the log
    assert [a.status_code for a in attempts] == [None] * (len(attempts) - 1) + [200]
