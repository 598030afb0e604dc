"""The SQLite storage: schema and migrations, refusals, records, erasure, concurrency, the writer.

Every test uses a real database file in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from loguru import logger
from sqlite_utils import Database

from mindbot.errors import StorageError
from mindbot.storage import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AsyncStorageWriter,
    MemoryRecord,
    SessionRecord,
    SQLiteStorage,
    TurnRecord,
)

PHONE = "+15550107788"
NAME = "Quintavius"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "mindbot.db"


@pytest.fixture
def storage(db_path: Path):
    storage = SQLiteStorage(db_path)
    yield storage
    storage.close()


def session(session_id: str, user_id: int | None, **fields) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        user_id=user_id,
        transport="twilio",
        pipeline="assistant",
        persona="default",
        **fields,
    )


def turn(session_id: str, idx: int, text: str = "hello", **fields) -> TurnRecord:
    role = fields.pop("role", "user" if idx % 2 == 0 else "assistant")
    return TurnRecord(session_id=session_id, idx=idx, role=role, text=text, **fields)


def row_count(path: Path, table: str) -> int:
    """Rows in ``table``, read through a connection of the test's own (0 if none yet)."""
    db = Database(path)
    try:
        return db[table].count
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        db.close()


def file_bytes(path: Path) -> bytes:
    """The database file and its -wal and -shm companions, concatenated."""
    parts = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    return b"".join(part.read_bytes() for part in parts if part.exists())


# -- schema and migrations ---------------------------------------------------------------------


def test_a_new_file_gets_the_whole_schema_in_wal_mode(db_path: Path):
    SQLiteStorage(db_path).close()

    db = Database(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"users", "identities", "sessions", "turns", "memories", "preferences", "events"} <= set(
        db.table_names()
    )
    indexed = {
        (table, tuple(index.columns)) for table in db.table_names() for index in db[table].indexes
    }
    assert ("turns", ("session_id", "idx")) in indexed
    assert ("sessions", ("user_id", "started_at")) in indexed
    assert ("memories", ("user_id", "created_at")) in indexed
    assert ("identities", ("kind", "value")) in indexed
    db.close()


def test_an_older_file_is_upgraded_and_keeps_its_rows(db_path: Path):
    db_path.parent.mkdir(parents=True)
    old = Database(db_path)
    old.executescript(MIGRATIONS[0])
    old.execute("PRAGMA user_version = 1")
    old["users"].insert({"id": 7, "created_at": "2024-05-01T10:00:00+00:00", "display_name": "Al"})
    old["identities"].insert(
        {"user_id": 7, "kind": "phone", "value": PHONE, "created_at": "2024-05-01T10:00:00+00:00"}
    )
    old["sessions"].insert(
        {
            "id": "old-session",
            "user_id": 7,
            "transport": "twilio",
            "pipeline": "assistant",
            "persona": "default",
            "started_at": "2024-05-01T10:00:00.000000+00:00",
        }
    )
    old["turns"].insert(
        {
            "session_id": "old-session",
            "idx": 0,
            "role": "user",
            "text": "from the old days",
            "started_at": "2024-05-01T10:00:01.000000+00:00",
            "ended_at": "2024-05-01T10:00:02.000000+00:00",
        }
    )
    old.close()

    storage = SQLiteStorage(db_path)
    user = storage.find_user(PHONE)
    assert user is not None and user.id == 7 and user.display_name == "Al"
    assert [t.text for t in storage.turns("old-session")] == ["from the old days"]
    memory_id = storage.add_memory(MemoryRecord(7, "likes tea", "fact", 0.8))  # a v2 table
    assert [m.id for m in storage.memories(7)] == [memory_id]
    storage.add_event("test", {"n": 1})  # a v3 table
    storage.close()
    db = Database(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_file_from_a_newer_mindbot_is_refused_untouched(db_path: Path):
    db_path.parent.mkdir(parents=True)
    newer = Database(db_path)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer["future"].insert({"x": 1})
    newer.close()
    before = db_path.read_bytes()

    with pytest.raises(StorageError, match="newer") as error:
        SQLiteStorage(db_path)

    assert str(db_path) in str(error.value) and "\n" not in str(error.value)
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("header", [b"", b"SQLite format 3\x00"], ids=["garbage", "bad-body"])
def test_a_file_that_is_not_a_database_is_refused_untouched(db_path: Path, header: bytes):
    db_path.parent.mkdir(parents=True)
    garbage = header + random.Random(1).randbytes(8192)
    db_path.write_bytes(garbage)

    with pytest.raises(StorageError) as error:
        SQLiteStorage(db_path)

    assert str(db_path) in str(error.value) and "\n" not in str(error.value)
    assert db_path.read_bytes() == garbage
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["mindbot.db"]


@pytest.mark.parametrize("read_only", ["file", "directory"])
def test_a_read_only_file_or_directory_is_refused_for_an_ordinary_user(
    db_path: Path, read_only: str
):
    if os.geteuid() == 0:
        reason = "running as root: chmod does not stop root writing (see the chattr tests)"
        print(reason)
        pytest.skip(reason)
    SQLiteStorage(db_path).close()
    before = db_path.read_bytes()
    target, mode = (db_path, 0o444) if read_only == "file" else (db_path.parent, 0o555)
    target.chmod(mode)
    try:
        with pytest.raises(StorageError, match="read-only") as error:
            SQLiteStorage(db_path)
        assert str(db_path) in str(error.value)
        assert db_path.read_bytes() == before
    finally:
        target.chmod(0o755)


@pytest.fixture
def immutable():
    """Marks a path immutable with ``chattr +i`` (which stops root too), undone afterwards."""
    marked: list[Path] = []
    if shutil.which("chattr") is None:
        reason = "chattr is not installed, so a read-only file cannot be made for root"
        print(reason)
        pytest.skip(reason)

    def mark(path: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            reason = f"chattr +i is not supported here: {done.stderr.strip()}"
            print(reason)
            pytest.skip(reason)
        marked.append(path)
        try:
            with open(path / "probe" if path.is_dir() else path, "ab"):
                pass
        except OSError:
            return
        reason = "chattr +i did not make the path read-only (a privileged container?)"
        print(reason)
        pytest.skip(reason)

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_immutable_file_is_refused_even_for_root(db_path: Path, immutable):
    SQLiteStorage(db_path).close()
    before = db_path.read_bytes()
    immutable(db_path)

    with pytest.raises(StorageError) as error:
        SQLiteStorage(db_path)

    assert str(db_path) in str(error.value)
    assert "written" in str(error.value) or "read-only" in str(error.value)
    assert db_path.read_bytes() == before


def test_a_file_in_an_immutable_directory_is_refused_even_for_root(db_path: Path, immutable):
    storage = SQLiteStorage(db_path)
    storage.user_for_identity("phone", PHONE)
    storage.close()
    before = db_path.read_bytes()
    immutable(db_path.parent)

    with pytest.raises(StorageError) as error:
        SQLiteStorage(db_path)

    assert str(db_path) in str(error.value)
    assert db_path.read_bytes() == before


def test_a_closed_storage_refuses_calls(storage: SQLiteStorage):
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.get_user(1)


# -- records -----------------------------------------------------------------------------------


def test_an_identity_always_leads_to_the_same_user(storage: SQLiteStorage):
    first = storage.user_for_identity("phone", PHONE, display_name=NAME)
    again = storage.user_for_identity("phone", PHONE, display_name="someone else")
    other = storage.user_for_identity("slack", "U123")

    assert again == first and again.display_name == NAME
    assert other.id != first.id
    assert storage.find_user(PHONE) == first
    assert storage.get_user(other.id) == other
    assert storage.find_user("+10000000000") is None and storage.get_user(999) is None
    with pytest.raises(ValueError, match="kind"):
        storage.user_for_identity("fax", PHONE)


def test_sessions_and_turns_come_back_as_stored(storage: SQLiteStorage):
    user = storage.user_for_identity("webrtc", "browser-1")
    storage.start_session(session("s2", user.id, started_at="2025-01-02T00:00:00+01:00"))
    storage.start_session(session("s1", user.id, started_at="2025-01-01T12:00:00+00:00"))
    full = turn(
        "s1",
        1,
        "Paris.",
        interrupted=True,
        latency_secs=0.8,
        stages={"stt": 0.1, "llm": 0.5},
        emotion={"label": "calm"},
        sources=[{"doc": "atlas"}],
        tool_calls=[{"name": "lookup", "args": {"q": "capital"}}],
    )
    storage.add_turn(full)
    storage.add_turn(turn("s1", 0, "The capital of France?"))
    storage.end_session("s1", "completed", ended_at="2025-01-01T12:05:00+00:00")

    assert [s.id for s in storage.sessions_for_user(user.id)] == ["s1", "s2"]  # by start time
    ended = storage.get_session("s1")
    assert ended is not None and ended.end_reason == "completed"
    assert ended.ended_at == "2025-01-01T12:05:00.000000+00:00"
    assert storage.get_session("s2").started_at == "2025-01-01T23:00:00.000000+00:00"  # UTC
    stored = storage.turns("s1")
    assert [t.idx for t in stored] == [0, 1]
    assert stored[1] == TurnRecord(**{**full.__dict__, "id": stored[1].id})
    assert stored[0].interrupted is False and stored[0].stages is None


def test_a_bad_turn_or_session_is_refused(storage: SQLiteStorage):
    storage.start_session(session("s1", None))
    storage.add_turn(turn("s1", 0))
    with pytest.raises(StorageError):
        storage.add_turn(turn("s1", 0, "the same idx again"))
    with pytest.raises(StorageError):
        storage.add_turn(turn("never-started", 0))
    with pytest.raises(StorageError):
        storage.start_session(session("s1", None))
    with pytest.raises(StorageError):
        storage.start_session(session("s3", 12345))  # no such user
    with pytest.raises(StorageError):
        storage.end_session("never-started", "completed")
    with pytest.raises(ValueError):
        storage.add_turn(turn("s1", 1, role="narrator"))
    with pytest.raises(ValueError):
        storage.add_turn(turn("s1", 1, started_at="yesterday"))
    assert [t.text for t in storage.turns("s1")] == ["hello"]


def test_preferences_are_overwritten_per_key(storage: SQLiteStorage):
    user = storage.user_for_identity("discord", "d-1")
    storage.set_preference(user.id, "voice", "alto")
    storage.set_preference(user.id, "speed", 1.25)
    storage.set_preference(user.id, "voice", {"name": "bass", "pitch": -2})

    assert storage.preferences(user.id) == {"voice": {"name": "bass", "pitch": -2}, "speed": 1.25}
    with pytest.raises(ValueError):
        storage.set_preference(user.id, "bad", object())


def test_memories_are_newest_first_and_expire(storage: SQLiteStorage):
    user = storage.user_for_identity("daily", "p-1")
    old = storage.add_memory(
        MemoryRecord(user.id, "has a dog", "fact", 0.9, created_at="2025-01-01T00:00:00+00:00")
    )
    new = storage.add_memory(
        MemoryRecord(user.id, "likes jazz", "preference", 0.6, created_at="2025-02-01T00:00Z")
    )
    gone = storage.add_memory(
        MemoryRecord(user.id, "is in Rome", "fact", 0.7, expires_at="2025-01-15T00:00:00+00:00")
    )

    assert [m.id for m in storage.memories(user.id)] == [new, old]
    assert [m.id for m in storage.memories(user.id, limit=1)] == [new]
    assert {m.id for m in storage.memories(user.id, include_expired=True)} == {old, new, gone}
    storage.delete_memory(old)
    assert [m.text for m in storage.memories(user.id)] == ["likes jazz"]
    with pytest.raises(StorageError):
        storage.add_memory(MemoryRecord(user.id, "sure", "fact", confidence=1.5))


def test_events_are_kept_in_order_and_filtered_by_kind(storage: SQLiteStorage):
    storage.add_event("session.started", {"session_id": "a"})
    storage.add_event("llm.error", {"status": 500})
    storage.add_event("session.started", {"session_id": "b"})

    started = storage.events("session.started")
    assert [e["data"]["session_id"] for e in started] == ["a", "b"]
    kinds = [e["kind"] for e in storage.events()]
    assert kinds == ["session.started", "llm.error", "session.started"]


def test_a_session_summary_has_the_expected_figures(storage: SQLiteStorage):
    storage.start_session(session("s1", None, started_at="2025-03-01T10:00:00+00:00"))
    latencies = [0.5, 0.7, 0.9, 1.1, 3.0]
    for i, latency in enumerate(latencies):
        storage.add_turn(turn("s1", 2 * i, "question", latency_secs=9.9))  # user turns ignored
        storage.add_turn(
            turn("s1", 2 * i + 1, "answer", latency_secs=latency, interrupted=i in (1, 3))
        )
    storage.add_turn(turn("s1", 10, "an assistant turn without a latency", role="assistant"))
    running = storage.session_summary("s1")
    storage.end_session("s1", "cancelled", ended_at="2025-03-01T10:02:30.500000+00:00")

    summary = storage.session_summary("s1")

    assert running["duration_secs"] is None and running["end_reason"] is None
    assert summary["duration_secs"] == 150.5
    assert summary["turns"] == 11
    assert summary["interruptions"] == 2
    assert summary["mean_latency_secs"] == pytest.approx(1.24)
    assert summary["p95_latency_secs"] == 3.0
    assert summary["end_reason"] == "cancelled"
    with pytest.raises(StorageError):
        storage.session_summary("never-started")


# -- a user's data -----------------------------------------------------------------------------


def fill_user(storage: SQLiteStorage, phone: str, name: str) -> int:
    """A user with an identity, two sessions of turns, memories, a preference and events."""
    user = storage.user_for_identity("phone", phone, display_name=name)
    for s in range(2):
        session_id = f"{phone}-session-{s}"
        storage.start_session(session(session_id, user.id))
        storage.add_event("session.started", {"session_id": session_id})
        for i in range(4):
            storage.add_turn(turn(session_id, i, f"My name is {name}, call me on {phone}"))
        storage.end_session(session_id, "completed")
        storage.add_memory(
            MemoryRecord(user.id, f"{name} lives by the sea", "fact", 0.9, session_id, 1)
        )
    storage.set_preference(user.id, "name_to_use", name)
    storage.add_event("user.seen", {"user_id": user.id})
    return user.id


def test_an_export_survives_a_json_round_trip(storage: SQLiteStorage):
    user_id = fill_user(storage, PHONE, NAME)
    storage.add_turn(turn(f"{PHONE}-session-0", 4, "ok", stages={"tts": 0.2}, sources=["a"]))

    exported = storage.export_user(user_id)

    assert json.loads(json.dumps(exported)) == exported
    assert exported["user"]["display_name"] == NAME
    assert [i["value"] for i in exported["identities"]] == [PHONE]
    assert [len(s["turns"]) for s in exported["sessions"]] == [5, 4]
    assert exported["sessions"][0]["turns"][4]["stages"] == {"tts": 0.2}
    assert len(exported["memories"]) == 2
    assert exported["preferences"] == {"name_to_use": NAME}
    with pytest.raises(StorageError):
        storage.export_user(999)


def test_an_erased_user_leaves_no_trace_in_the_files(db_path: Path, storage: SQLiteStorage):
    user_id = fill_user(storage, PHONE, NAME)
    other_id = fill_user(storage, "+15559990000", "Bartholomew")
    assert PHONE.encode() in file_bytes(db_path) and NAME.encode() in file_bytes(db_path)

    storage.erase_user(user_id)

    stored = file_bytes(db_path)
    assert PHONE.encode() not in stored
    assert PHONE[1:].encode() not in stored
    assert NAME.encode() not in stored
    assert storage.get_user(user_id) is None and storage.find_user(PHONE) is None
    assert storage.sessions_for_user(user_id) == [] and storage.memories(user_id) == []
    assert storage.turns(f"{PHONE}-session-0") == []
    assert storage.preferences(user_id) == {}
    remaining = json.dumps(storage.events())
    assert PHONE not in remaining and f"{PHONE}-session" not in remaining
    assert all(e["data"].get("user_id") != user_id for e in storage.events())
    (audit,) = storage.events("user.erased")
    assert set(audit["data"]) == {"erasure_id", "counts"}
    assert audit["data"]["counts"]["turns"] == 8 and audit["data"]["counts"]["users"] == 1
    assert PHONE not in json.dumps(audit) and NAME not in json.dumps(audit)
    # The other user is untouched.
    assert len(storage.export_user(other_id)["sessions"]) == 2
    assert b"Bartholomew" in file_bytes(db_path)


def test_erasing_an_unknown_user_fails(storage: SQLiteStorage):
    with pytest.raises(StorageError, match="no user"):
        storage.erase_user(42)
    assert storage.events("user.erased") == []


# -- concurrency -------------------------------------------------------------------------------


def write_turns(storage: SQLiteStorage, session_id: str, errors: list[BaseException]) -> None:
    try:
        storage.start_session(session(session_id, None))
        for i in range(100):
            storage.add_turn(turn(session_id, i, f"turn {i}"))
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


def run_threads(target, count: int) -> list[BaseException]:
    errors: list[BaseException] = []
    threads = [threading.Thread(target=target, args=(i, errors)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_twenty_threads_write_through_one_storage(db_path: Path, storage: SQLiteStorage):
    errors = run_threads(lambda i, errors: write_turns(storage, f"thread-{i}", errors), 20)

    assert errors == []
    assert row_count(db_path, "turns") == 2000
    assert [t.idx for t in storage.turns("thread-7")] == list(range(100))


def test_twenty_storages_write_to_one_file(db_path: Path):
    def writer(i: int, errors: list[BaseException]) -> None:
        try:
            own = SQLiteStorage(db_path)  # as a separate process would: its own connection
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            return
        write_turns(own, f"storage-{i}", errors)
        own.close()

    errors = run_threads(writer, 20)

    assert errors == []
    assert row_count(db_path, "turns") == 2000


# -- the background writer ---------------------------------------------------------------------


@pytest.fixture
def log_lines():
    lines: list[tuple[str, str]] = []
    sink = logger.add(
        lambda m: lines.append((m.record["level"].name, m.record["message"])), level="DEBUG"
    )
    yield lines
    logger.remove(sink)


def test_the_writer_writes_in_order_and_survives_a_failure(
    storage: SQLiteStorage, log_lines: list[tuple[str, str]]
):
    writer = AsyncStorageWriter(storage)
    writer.submit("start_session", session("s1", None))
    for i in range(50):
        writer.submit("add_turn", turn("s1", i, f"turn {i}"))
    writer.submit("add_turn", turn("s1", 3, f"a duplicate from {PHONE}"))  # fails
    writer.submit(storage.add_turn, turn("s1", 50, "after the failure"))
    writer.submit("end_session", "s1", "completed")

    assert writer.flush(timeout=10)

    assert [t.text for t in storage.turns("s1")] == [f"turn {i}" for i in range(50)] + [
        "after the failure"
    ]
    assert storage.get_session("s1").end_reason == "completed"
    errors = [message for level, message in log_lines if level == "ERROR"]
    assert len(errors) == 1 and "add_turn" in errors[0]
    above_debug = [message for level, message in log_lines if level != "DEBUG"]
    assert not any(PHONE in message for message in above_debug)
    writer.close()


def test_closing_the_writer_writes_everything_first(storage: SQLiteStorage):
    writer = AsyncStorageWriter(storage)
    writer.submit("start_session", session("s1", None))
    for i in range(200):
        writer.submit("add_turn", turn("s1", i))

    writer.close(timeout=10)

    assert len(storage.turns("s1")) == 200
    with pytest.raises(StorageError, match="closed"):
        writer.submit("add_event", "late", {})
    with pytest.raises(AttributeError):
        AsyncStorageWriter(storage).submit("no_such_method")


def test_each_write_is_committed_without_a_flush(db_path: Path, storage: SQLiteStorage):
    writer = AsyncStorageWriter(storage)
    writer.submit("start_session", session("s1", None))
    writer.submit("add_turn", turn("s1", 0))
    reader = SQLiteStorage(db_path)  # another connection sees only committed rows

    deadline = time.monotonic() + 10
    while not reader.turns("s1") and time.monotonic() < deadline:
        time.sleep(0.01)

    assert len(reader.turns("s1")) == 1
    reader.close()
    writer.close()


CHILD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from mindbot.storage import AsyncStorageWriter, SessionRecord, SQLiteStorage, TurnRecord

    writer = AsyncStorageWriter(SQLiteStorage(Path(sys.argv[1])))
    writer.submit("start_session", SessionRecord("s1", None, "twilio", "assistant", "default"))
    for i in range(30):
        writer.submit("add_turn", TurnRecord("s1", i, "user", f"turn {i}"))
    print("submitted", flush=True)
    threading.Event().wait()  # never flushes, never closes: killed with SIGKILL
    """
)


def test_a_killed_process_keeps_every_submitted_write(db_path: Path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path)],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "submitted"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if db_path.exists() and row_count(db_path, "turns") == 30:
                break
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()

    storage = SQLiteStorage(db_path)
    assert [t.idx for t in storage.turns("s1")] == list(range(30))
    storage.close()
