"""``mindbot report``: the real command on a database prepared through Storage's own methods,
as a table, JSON and CSV, by day and by persona, with the default price table."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from mindbot.pricing import PricingSettings
from mindbot.storage import SessionRecord, SQLiteStorage, TurnRecord, UsageRecord

from conftest import mindbot

RANGE = ("--since", "2025-05-01", "--until", "2025-05-03")


def at(moment: str) -> str:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC).isoformat(timespec="microseconds")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two calls on 1 May (a receptionist and a tutor) and one on 2 May, OpenAI, Cartesia and
    Deepgram usage, at the default prices."""
    folder = tmp_path_factory.mktemp("report")
    storage = SQLiteStorage(folder / "mindbot.db")
    user = storage.user_for_identity("phone", "+15550109901")
    calls = [
        ("m1", "receptionist", "2025-05-01T09:00:00", [0.4, 0.9, 0.6], 120),
        ("m2", "tutor", "2025-05-01T17:30:00", [1.5], 45),
        ("m3", "receptionist", "2025-05-02T23:59:30", [0.7, 0.5], 90),
    ]
    for session_id, persona, start, latencies, seconds in calls:
        storage.start_session(
            SessionRecord(session_id, user.id, "twilio", "assistant", persona, at(start))
        )
        turns = [TurnRecord(session_id, 0, "assistant", "hello", at(start), at(start))]
        for n, latency in enumerate(latencies, start=1):
            turns += [
                TurnRecord(session_id, 2 * n - 1, "user", "a question", at(start), at(start)),
                TurnRecord(session_id, 2 * n, "assistant", "an answer", latency_secs=latency),
            ]
        storage.add_turns(turns)
        for usage in (
            UsageRecord(session_id, at(start), "llm", "openai", "gpt-4.1-mini", 250_000, 50_000),
            UsageRecord(session_id, at(start), "tts", "cartesia", "sonic-2", characters=20_000),
            UsageRecord(session_id, at(start), "stt", "deepgram", "nova-3", audio_secs=seconds),
        ):
            storage.add_usage(usage)
        end = datetime.fromisoformat(at(start)).timestamp() + seconds
        storage.end_session(session_id, "completed", datetime.fromtimestamp(end, UTC).isoformat())
    priced = {
        session_id: sum(PricingSettings().cost_parts(storage.usage(session_id=session_id)).values())
        for session_id, *_ in calls
    }
    storage.close()
    return folder, priced


def report(folder, *args) -> str:
    done = mindbot(folder, "report", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_readable_table_by_day(data_dir):
    folder, priced = data_dir
    lines = report(folder, *RANGE).splitlines()
    assert lines[0] == "2025-05-01 .. 2025-05-03 (UTC days), by day"
    header = lines[1].split()
    assert header[:3] == ["day", "sessions", "turns"] and header[-2:] == ["cost", "USD"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if not line.startswith("-")}
    assert list(rows) == ["2025-05-01", "2025-05-02", "2025-05-03", "total"]
    first = rows["2025-05-01"]
    # sessions, turns, duration, interruptions, p50, p95 (of 0.4 0.6 0.9 1.5), tools, ok, errors
    assert first[1:10] == ["2", "10", "0:02:45", "0", "0.60", "1.50", "0", "-", "0"]
    assert first[10:14] == ["500000", "100000", "40000", "165.0"]
    assert float(first[14]) == pytest.approx(priced["m1"] + priced["m2"], abs=5e-5)
    assert rows["2025-05-02"][1:3] == ["1", "5"]  # the call at 23:59:30 stays on its day
    assert rows["2025-05-03"][1:7] == ["0", "0", "0:00:00", "0", "-", "-"]
    assert rows["total"][1:3] == ["3", "15"]


def test_json_is_what_the_api_answers(data_dir):
    folder, priced = data_dir
    body = json.loads(report(folder, *RANGE, "--format", "json"))
    assert (body["since"], body["until"], body["currency"]) == ("2025-05-01", "2025-05-03", "USD")
    assert [day["sessions"] for day in body["days"]] == [2, 1, 0]
    assert body["days"][1]["latency_p50"] == 0.5 and body["days"][1]["latency_p95"] == 0.7
    assert body["totals"]["llm_prompt_tokens"] == 750_000
    assert body["totals"]["stt_audio_secs"] == 255.0
    assert body["totals"]["cost"] == pytest.approx(sum(priced.values()), abs=1e-6)
    assert body["totals"]["cost_breakdown"]["llm"] > 0


def test_csv_by_persona_and_bad_ranges(data_dir):
    folder, priced = data_dir
    rows = list(
        csv.DictReader(io.StringIO(report(folder, *RANGE, "--by", "persona", "--format", "csv")))
    )
    assert [row["persona"] for row in rows] == ["receptionist", "tutor"]
    receptionist = rows[0]
    assert (receptionist["sessions"], receptionist["turns"], receptionist["duration_secs"]) == (
        "2",
        "12",
        "210.0",
    )
    assert (receptionist["latency_p50"], receptionist["latency_p95"]) == ("0.6", "0.9")
    assert float(receptionist["cost"]) == pytest.approx(priced["m1"] + priced["m3"], abs=1e-6)
    assert rows[1]["tool_success_rate"] == ""  # no tool ran: no rate, rather than 0

    too_long = mindbot(folder, "report", "--since", "2024-01-01", "--until", "2025-01-01")
    assert too_long.returncode == 2 and "366 days" in too_long.stderr
    not_a_day = mindbot(folder, "report", "--since", "2025-02-30")
    assert not_a_day.returncode == 2 and "YYYY-MM-DD" in not_a_day.stderr
    before = datetime.now(UTC).date()
    first_line = report(folder).splitlines()[0]  # the last 14 days by default
    after = datetime.now(UTC).date()
    assert first_line in {
        f"{today - timedelta(days=13)} .. {today} (UTC days), by day" for today in (before, after)
    }
