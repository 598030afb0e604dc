"""Schema v5: API keys, the access audit, jobs, webhook subscriptions, the outbox, deliveries,
and the session listings the API reads. Every test uses a real database file in ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlite_utils import Database

from mindbot.errors import StorageError
from mindbot.storage import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SessionRecord,
    SQLiteStorage,
    TurnRecord,
)

PHONE = "+15550104242"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "mindbot.db"


@pytest.fixture
def storage(db_path: Path):
    storage = SQLiteStorage(db_path)
    yield storage
    storage.close()


def session(session_id: str, user_id: int | None, **fields) -> SessionRecord:
    values = {"transport": "twilio", "pipeline": "assistant", "persona": "mindbot", **fields}
    return SessionRecord(id=session_id, user_id=user_id, **values)


def file_bytes(path: Path) -> bytes:
    parts = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    return b"".join(part.read_bytes() for part in parts if part.exists())


def test_a_v4_file_is_upgraded_and_keeps_its_rows(db_path: Path):
    db_path.parent.mkdir(parents=True)
    old = Database(db_path)
    for migration in MIGRATIONS[:4]:
        old.executescript(migration)
    old.execute("PRAGMA user_version = 4")
    old["users"].insert({"id": 3, "created_at": "2025-02-01T10:00:00+00:00", "display_name": None})
    old["sessions"].insert(
        {
            "id": "v4-session",
            "user_id": 3,
            "transport": "twilio",
            "pipeline": "assistant",
            "persona": "mindbot",
            "started_at": "2025-02-01T10:00:00.000000+00:00",
            "ended_at": "2025-02-01T10:01:00.000000+00:00",
            "end_reason": "completed",
        }
    )
    old["turns"].insert(
        {
            "session_id": "v4-session",
            "idx": 0,
            "role": "user",
            "text": "kept across the upgrade",
            "started_at": "2025-02-01T10:00:01.000000+00:00",
            "ended_at": "2025-02-01T10:00:02.000000+00:00",
        }
    )
    old["session_stats"].insert({"session_id": "v4-session", "turns": 1, "interruptions": 0})
    old["events"].insert({"at": "2025-02-01T10:00:00+00:00", "kind": "old", "data": "{}"})
    old.close()

    storage = SQLiteStorage(db_path)
    assert [t.text for t in storage.turns("v4-session")] == ["kept across the upgrade"]
    assert storage.session_stats("v4-session")["turns"] == 1
    assert [e["kind"] for e in storage.events()] == ["old"]
    assert [s.id for s in storage.list_sessions(user_id=3)] == ["v4-session"]
    key = storage.add_api_key("upgrade", "mb_up", "ab" * 32, ["read"])  # a v5 table
    assert storage.api_key_by_hash("ab" * 32) == key
    storage.close()
    db = Database(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {
        "api_keys",
        "access_audit",
        "jobs",
        "webhook_subscriptions",
        "outbox",
        "webhook_deliveries",
    } <= set(db.table_names())
    db.close()


def test_session_events_are_queued_for_their_subscribers_in_the_same_transaction(
    storage: SQLiteStorage,
):
    started = storage.add_webhook_subscription("https://a.example/hook", ["session.started"], "s1")
    ended = storage.add_webhook_subscription("https://b.example/hook", ["session.ended"], "s2")
    everything = storage.add_webhook_subscription("https://c.example/hook", ["*"], "s3")
    storage.add_webhook_subscription("https://d.example/hook", ["user.erased"], "s4")

    storage.start_session(session("s-1", None, started_at="2025-05-01T09:00:00+00:00"))
    storage.add_turn(TurnRecord("s-1", 0, "assistant", "Hello", latency_secs=0.5))
    storage.end_session("s-1", "completed", ended_at="2025-05-01T09:02:00+00:00")

    rows = storage.outbox()
    assert [(r.event_type, r.subscription_id) for r in rows] == [
        ("session.started", started.id),
        ("session.started", everything.id),
        ("session.ended", ended.id),
        ("session.ended", everything.id),
    ]
    assert rows[0].payload["session"]["id"] == "s-1"
    summary = rows[2].payload["summary"]
    assert summary["duration_secs"] == 120 and summary["turns"] == 1
    assert rows[2].payload["session"]["end_reason"] == "completed"
    assert all(r.attempts == 0 and r.delivered_at is None for r in rows)

    # A session that cannot be recorded queues nothing: the event shares its transaction.
    with pytest.raises(StorageError):
        storage.start_session(session("s-1", None))
    with pytest.raises(StorageError):
        storage.start_session(session("s-2", 999))  # no such user
    with pytest.raises(StorageError):
        storage.end_session("never-started", "completed")
    assert len(storage.outbox()) == 4


def test_a_session_is_not_recorded_when_its_event_cannot_be(db_path: Path, storage: SQLiteStorage):
    storage.add_webhook_subscription("https://a.example/hook", ["*"], "secret")
    storage.start_session(session("before", None))
    broken = Database(db_path)
    broken.execute(
        "CREATE TRIGGER outbox_down BEFORE INSERT ON outbox BEGIN"
        " SELECT RAISE(ABORT, 'outbox down'); END"
    )
    broken.close()

    with pytest.raises(StorageError, match="outbox down"):
        storage.start_session(session("during", None))
    with pytest.raises(StorageError, match="outbox down"):
        storage.end_session("before", "completed")

    assert storage.get_session("during") is None
    assert storage.get_session("before").ended_at is None
    assert storage.session_stats("before") is None


def test_outbox_rows_are_claimed_retried_delivered_or_given_up(storage: SQLiteStorage):
    hook = storage.add_webhook_subscription("https://a.example/hook", ["*"], "secret")
    assert storage.add_outbox_event("test.ping", {"n": 1}) == 1
    assert storage.add_outbox_event("test.ping", {"n": 2}) == 1
    first, second = storage.outbox()

    claimed = storage.claim_outbox(limit=1, now="2999-01-01T00:00:00+00:00")
    assert [r.id for r in claimed] == [first.id] and claimed[0].attempts == 1
    # Leased for 60 s: another claim at the same moment takes only the other row.
    assert [r.id for r in storage.claim_outbox(now="2999-01-01T00:00:00+00:00")] == [second.id]

    storage.add_webhook_delivery(first.id, status_code=500, duration_ms=12.5)
    storage.mark_outbox_failed(first.id, "HTTP 500", "2999-01-01T00:05:00+00:00")
    storage.add_webhook_delivery(second.id, status_code=200, duration_ms=8.0)
    storage.mark_outbox_delivered(second.id)

    assert storage.claim_outbox(now="2999-01-01T00:04:59+00:00") == []
    retried = storage.claim_outbox(now="2999-01-01T00:05:00+00:00")
    assert [(r.id, r.attempts, r.last_error) for r in retried] == [(first.id, 2, "HTTP 500")]
    storage.add_webhook_delivery(first.id, error="ConnectError", duration_ms=3.0)
    storage.mark_outbox_failed(first.id, "ConnectError", None)  # given up

    assert storage.outbox(pending_only=True) == []
    assert storage.claim_outbox(now="3999-01-01T00:00:00+00:00") == []
    attempts = storage.webhook_deliveries(first.id)
    assert [(d.status_code, d.error) for d in attempts] == [(500, None), (None, "ConnectError")]
    assert len(storage.webhook_deliveries()) == 3
    with pytest.raises(StorageError):
        storage.mark_outbox_delivered(12345)

    # Deleting the subscription takes its rows and their deliveries along.
    assert storage.delete_webhook_subscription(hook.id) is True
    assert storage.outbox() == [] and storage.webhook_deliveries() == []
    assert storage.delete_webhook_subscription(hook.id) is False
    assert "secret" not in repr(storage.webhook_subscriptions())


def test_api_keys_are_found_by_hash_listed_revoked_and_touched(storage: SQLiteStorage):
    key = storage.add_api_key("crm", "mb_aaaa", "11" * 32, ["read", "write"], rate_per_minute=5)
    other = storage.add_api_key("ops", "mb_bbbb", "22" * 32, ["admin"])
    assert storage.api_key_by_hash("11" * 32) == key
    assert key.scopes == ("read", "write") and key.rate_per_minute == 5
    assert storage.api_key_by_hash("33" * 32) is None

    storage.touch_api_key(key.id, at="2025-06-01T12:00:00+02:00")
    assert storage.api_key_by_hash("11" * 32).last_used_at == "2025-06-01T10:00:00.000000+00:00"

    revoked = storage.revoke_api_key(other.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert storage.revoke_api_key(other.id).revoked_at == revoked.revoked_at  # kept
    assert storage.revoke_api_key(999) is None
    assert [k.name for k in storage.api_keys()] == ["crm", "ops"]
    assert [k.name for k in storage.api_keys(include_revoked=False)] == ["crm"]

    with pytest.raises(StorageError):
        storage.add_api_key("dup", "mb_aaaa", "44" * 32, ["read"])  # the prefix is taken
    with pytest.raises(ValueError):
        storage.add_api_key("none", "mb_cccc", "55" * 32, [])
    with pytest.raises(ValueError):
        storage.add_api_key("zero", "mb_dddd", "66" * 32, ["read"], rate_per_minute=0)


def test_jobs_move_through_their_states(storage: SQLiteStorage):
    job = storage.add_job("questions", {"questions": ["a", "b"]})
    assert (job.status, job.result, job.error) == ("queued", None, None)
    storage.update_job(job.id, "running")
    storage.update_job(job.id, "done", result={"answers": ["x", "y"]})
    done = storage.get_job(job.id)
    assert done.status == "done" and done.result == {"answers": ["x", "y"]}
    assert done.input == {"questions": ["a", "b"]} and done.updated_at >= done.created_at

    stuck = storage.add_job("kb.ingest", {"urls": []})
    storage.update_job(stuck.id, "running")
    waiting = storage.add_job("kb.ingest", {"urls": []})
    assert storage.fail_unfinished_jobs("interrupted") == 2
    assert storage.get_job(stuck.id).error == "interrupted"
    assert [j.id for j in storage.jobs(status="failed")] == [waiting.id, stuck.id]
    assert [j.id for j in storage.jobs(kind="questions")] == [job.id]

    with pytest.raises(ValueError):
        storage.update_job(job.id, "exploded")
    with pytest.raises(StorageError):
        storage.update_job("no-such-job", "done")
    assert storage.get_job("no-such-job") is None


def test_sessions_are_listed_with_filters_and_read_page_by_page(storage: SQLiteStorage):
    alice = storage.user_for_identity("phone", "+15550100011")
    bob = storage.user_for_identity("phone", "+15550100012")
    for n in range(6):
        storage.start_session(
            session(
                f"s{n}",
                alice.id if n % 2 == 0 else bob.id,
                persona="tutor" if n < 3 else "mindbot",
                started_at=f"2025-04-0{n + 1}T08:00:00+00:00",
            )
        )
        storage.add_turns(TurnRecord(f"s{n}", i, "user", f"turn {i}") for i in range(n))

    assert [s.id for s in storage.list_sessions()] == ["s5", "s4", "s3", "s2", "s1", "s0"]
    assert [s.id for s in storage.list_sessions(user_id=alice.id)] == ["s4", "s2", "s0"]
    assert [s.id for s in storage.list_sessions(persona="tutor", limit=2)] == ["s2", "s1"]
    assert [s.id for s in storage.list_sessions(persona="tutor", limit=2, offset=2)] == ["s0"]
    window = storage.list_sessions(
        since="2025-04-02T00:00:00+00:00", until="2025-04-04T08:00:00+00:00"
    )
    assert [s.id for s in window] == ["s2", "s1"]  # until is exclusive

    pages, after = [], None
    while page := storage.sessions_with_turns(
        since="2025-04-02T00:00:00+00:00", after=after, limit=2
    ):
        pages.append([(s.id, [t.idx for t in turns]) for s, turns in page])
        after = (page[-1][0].started_at, page[-1][0].id)
    assert pages == [
        [("s1", [0]), ("s2", [0, 1])],
        [("s3", [0, 1, 2]), ("s4", [0, 1, 2, 3])],
        [("s5", [0, 1, 2, 3, 4])],
    ]
    with pytest.raises(ValueError):
        storage.list_sessions(since="2025-04-02")  # no offset
    with pytest.raises(ValueError):
        storage.list_sessions(limit=0)


def test_erasure_drops_the_users_webhook_events_and_unlinks_their_audit_rows(
    db_path: Path, storage: SQLiteStorage
):
    storage.add_webhook_subscription("https://a.example/hook", ["*"], "secret")
    user = storage.user_for_identity("phone", PHONE)
    other = storage.user_for_identity("phone", "+15550100099")
    # A session id may carry personal data (here the number): its events must go too.
    storage.start_session(session(f"{PHONE}-call", user.id))
    storage.end_session(f"{PHONE}-call", "completed")
    storage.start_session(session("other-call", other.id))
    storage.add_access_audit("crm", "transcript.read", key_id=None, session_id=f"{PHONE}-call")
    storage.add_access_audit("crm", "user.exported", user_id=user.id, detail={"format": "json"})
    storage.add_access_audit("crm", "user.read", user_id=other.id)

    storage.erase_user(user.id)

    assert PHONE.encode() not in file_bytes(db_path)
    assert [r.payload["session"]["id"] for r in storage.outbox()] == ["other-call"]
    rows = storage.access_audit()
    assert [r.action for r in rows] == ["user.read", "user.exported", "transcript.read"]
    (erased,) = storage.events("user.erased")
    for row in rows[1:]:
        assert (row.user_id, row.session_id) == (None, None)
        assert row.erasure_id == erased["data"]["erasure_id"]
    assert rows[0].user_id == other.id and rows[0].erasure_id is None
    assert erased["data"]["counts"]["outbox"] == 2
    assert erased["data"]["counts"]["access_audit"] == 2
    assert storage.access_audit(user_id=user.id) == []
    assert json.dumps(rows[1].detail) == '{"format": "json"}'


def test_the_write_probe_fails_on_a_closed_storage(db_path: Path):
    storage = SQLiteStorage(db_path)
    storage.check_writable()
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.check_writable()
