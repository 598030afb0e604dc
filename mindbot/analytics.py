"""Analytics: how sessions went and what they cost, per session and per UTC day, user, persona
or provider, for ``/api/v1/analytics`` and ``mindbot report``.

The figures of a group of sessions (``FIELDS``, then extras):

- ``sessions``, ``turns``, ``interruptions`` (assistant turns cut off by the caller) and
  ``duration_secs`` (summed over the sessions that have ended).
- ``latency_p50`` / ``latency_p95``: nearest-rank percentiles of the latency of every assistant
  turn in the group, pooled (never an average of per-session percentiles): the smallest
  measured latency with at least p % of the measurements at or below it, so the figure is
  always one that happened (the same method as ``session_stats``' p95). None without any
  measurement; ``latency_samples`` says how many there were.
- ``tool_calls`` (every call the LLM made) and ``tool_success_rate`` = ok / (ok + error):
  calls the caller declined, that a barge-in cancelled, or that still await confirmation are
  neither success nor failure. None when no call ran.
- ``errors``: ``session.error`` events (a failing LLM, STT, TTS, transport).
- ``llm_prompt_tokens``, ``llm_completion_tokens``, ``tts_characters``, ``stt_audio_secs`` from
  the stored usage rows, and ``cost`` (with ``cost_breakdown`` by service) in
  ``Settings.pricing.currency``. Cost is computed when read, from the usage and the price table
  of the moment: changing a price re-prices history. Usage with no price costs nothing.
- Emotion: ``valence_first_half`` and ``valence_second_half`` (the mean valence of the caller's
  turns in the first and the second half of each session, pooled over the group; with an odd
  count the middle turn is in neither, with one turn in none) and ``emotion_labels`` counts.

Days are UTC. A session belongs to the day it started, with all its turns, errors and usage (a
call across midnight is not split). The usage of an erased user's sessions (unlinked from them)
still counts, on the day it was reported, for its provider, and under the key ``None`` by user
or persona. Date ranges are inclusive and at most ``MAX_RANGE_DAYS`` days.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from statistics import fmean
from typing import TYPE_CHECKING, Any, Literal

from mindbot.errors import ConfigError

if TYPE_CHECKING:
    from mindbot.pricing import PricingSettings
    from mindbot.storage import Storage

FIELDS: tuple[str, ...] = (
    "sessions",
    "turns",
    "duration_secs",
    "interruptions",
    "latency_p50",
    "latency_p95",
    "tool_calls",
    "tool_success_rate",
    "errors",
    "llm_prompt_tokens",
    "llm_completion_tokens",
    "tts_characters",
    "stt_audio_secs",
    "cost",
)
"""The figures of every day, group and session, in the API's contract order."""

GROUPINGS: tuple[str, ...] = ("day", "user", "persona", "provider")
MAX_RANGE_DAYS = 366
DEFAULT_DAYS = 14

Grouping = Literal["user", "persona", "provider"]
GroupKey = int | str | None


def nearest_rank(values: Sequence[float], percent: int) -> float | None:
    """The nearest-rank percentile: the smallest value with ``percent`` % of them at or below.

    Args:
        values: The measurements, in any order.
        percent: 1 to 100.

    Returns:
        One of ``values`` (None when there are none).
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = -(-percent * len(ordered) // 100)  # ceil in integers: 0.95 * n can round up past n
    return ordered[max(rank, 1) - 1]


def halves(values: Sequence[float]) -> tuple[Sequence[float], Sequence[float]]:
    """The first and the second half of a sequence; the middle of an odd count is in neither."""
    half = len(values) // 2
    return values[:half], values[len(values) - half :]


def parse_day(text: str) -> date:
    """A UTC day written ``YYYY-MM-DD``.

    Raises:
        ValueError: It is not such a day.
    """
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day written YYYY-MM-DD") from None


def date_range(
    since: date | None, until: date | None, *, today: date | None = None
) -> tuple[date, date]:
    """The inclusive range of UTC days a report covers.

    Without ``until`` it ends today (UTC); without ``since`` it is the ``DEFAULT_DAYS`` days
    ending at ``until``.

    Raises:
        ValueError: ``until`` is before ``since``, or the range is longer than
            ``MAX_RANGE_DAYS`` days.
    """
    until = until or today or datetime.now(UTC).date()
    since = since or until - timedelta(days=DEFAULT_DAYS - 1)
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    if (until - since).days + 1 > MAX_RANGE_DAYS:
        raise ValueError(f"a range covers at most {MAX_RANGE_DAYS} days; ask for less at a time")
    return since, until


# ----------------------------------------------------------------------------------------------
# What storage returns, as records


@dataclass(frozen=True)
class UsageTotal:
    """The summed usage of one service, provider and model (what ``PricingSettings`` prices).

    Args:
        service: ``llm``, ``tts`` or ``stt``.
        provider: E.g. ``openai``, ``cartesia``, ``deepgram``.
        model: The model, if known.
        prompt_tokens: LLM input tokens.
        completion_tokens: LLM output tokens.
        characters: Characters spoken by the TTS.
        audio_secs: Seconds of audio transcribed by the STT.
        requests: How many usage reports were summed.
    """

    service: str
    provider: str
    model: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    characters: int = 0
    audio_secs: float = 0.0
    requests: int = 0

    @classmethod
    def of(cls, row: dict[str, Any]) -> UsageTotal:
        """From a summed storage row."""
        return cls(
            service=row["service"],
            provider=row["provider"],
            model=row["model"],
            prompt_tokens=int(row["prompt_tokens"] or 0),
            completion_tokens=int(row["completion_tokens"] or 0),
            characters=int(row["characters"] or 0),
            audio_secs=float(row["audio_secs"] or 0.0),
            requests=int(row["requests"] or 0),
        )

    @property
    def key(self) -> tuple[str, str, str | None]:
        """What usage is summed by."""
        return (self.service, self.provider, self.model)

    def plus(self, other: UsageTotal) -> UsageTotal:
        """Both summed (prices are linear, so the sum costs what the parts cost)."""
        return replace(
            self,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            characters=self.characters + other.characters,
            audio_secs=self.audio_secs + other.audio_secs,
            requests=self.requests + other.requests,
        )


@dataclass
class SessionFacts:
    """One session's countable facts, from ``Storage.analytics_facts``.

    Args:
        id: The session id.
        user_id: Its user, None for an anonymous caller.
        persona: The persona the bot played.
        transport: ``twilio``, ``webrtc``, ``daily``…
        pipeline: The pipeline's name.
        started_at: When it started (UTC ISO 8601).
        ended_at: When it ended, if it has.
        end_reason: Why it ended, if it has.
        turns: Its turns, both roles.
        interruptions: Turns cut off.
        latencies: The latency of each measured assistant turn, in seconds.
        tool_statuses: Tool calls by status (``ok``, ``error``, ``declined``…).
        errors: Its ``session.error`` events.
        emotions: ``(turn idx, label, valence)`` of the turns with an emotion, in order.
        usage: What its services used.
    """

    id: str
    user_id: int | None
    persona: str
    transport: str
    pipeline: str
    started_at: str
    ended_at: str | None = None
    end_reason: str | None = None
    turns: int = 0
    interruptions: int = 0
    latencies: list[float] = field(default_factory=list)
    tool_statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    emotions: list[tuple[int, str | None, float | None]] = field(default_factory=list)
    usage: list[UsageTotal] = field(default_factory=list)

    @property
    def day(self) -> str:
        """The UTC day it started, ``YYYY-MM-DD`` (stored times are UTC)."""
        return self.started_at[:10]

    @property
    def duration_secs(self) -> float | None:
        """How long it lasted; None while it runs."""
        if self.ended_at is None:
            return None
        started = datetime.fromisoformat(self.started_at)
        return (datetime.fromisoformat(self.ended_at) - started).total_seconds()

    @property
    def valences(self) -> list[float]:
        """The caller's valence turn by turn, where one was estimated."""
        return [valence for _, _, valence in self.emotions if valence is not None]


def load_facts(
    storage: Storage,
    *,
    since: date | None = None,
    until: date | None = None,
    session_id: str | None = None,
) -> tuple[list[SessionFacts], list[tuple[str, UsageTotal]]]:
    """The sessions started in the UTC days ``since``..``until`` (or one session), and the
    usage no session owns any more, as ``(day, usage)``."""
    facts = storage.analytics_facts(
        since=_midnight(since) if since else None,
        until=_midnight(until + timedelta(days=1)) if until else None,
        session_id=session_id,
    )
    sessions = {
        row["id"]: SessionFacts(
            id=row["id"],
            user_id=row["user_id"],
            persona=row["persona"],
            transport=row["transport"],
            pipeline=row["pipeline"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            end_reason=row["end_reason"],
        )
        for row in facts["sessions"]
    }
    for row in facts["turn_counts"]:
        sessions[row["session_id"]].turns = int(row["turns"])
        sessions[row["session_id"]].interruptions = int(row["interruptions"] or 0)
    for row in facts["latencies"]:
        sessions[row["session_id"]].latencies.append(float(row["latency_secs"]))
    for row in facts["tool_calls"]:
        sessions[row["session_id"]].tool_statuses[str(row["status"])] += int(row["calls"])
    for row in facts["errors"]:
        sessions[row["session_id"]].errors = int(row["errors"])
    for row in facts["emotions"]:
        sessions[row["session_id"]].emotions.append(_emotion(row))
    for row in facts["usage"]:
        sessions[row["session_id"]].usage.append(UsageTotal.of(row))
    unlinked = [(row["day"], UsageTotal.of(row)) for row in facts["unlinked_usage"]]
    return list(sessions.values()), unlinked


def _midnight(day: date) -> str:
    return datetime.combine(day, time(), tzinfo=UTC).isoformat(timespec="microseconds")


def _emotion(row: dict[str, Any]) -> tuple[int, str | None, float | None]:
    # Emotion is free-form JSON: a label that is not text or a valence that is not a number
    # is left out rather than failing the report.
    label, valence = row["label"], row["valence"]
    return (
        int(row["idx"]),
        label if isinstance(label, str) else None,
        float(valence) if isinstance(valence, int | float) else None,
    )


# ----------------------------------------------------------------------------------------------
# Adding up


class Figures:
    """The figures of a group of sessions (a day, a user, a persona, a provider), added up."""

    def __init__(self) -> None:
        """Start from nothing: no sessions, no usage."""
        self.sessions = 0
        self.turns = 0
        self.duration_secs = 0.0
        self.interruptions = 0
        self.latencies: list[float] = []
        self.tool_statuses: Counter[str] = Counter()
        self.errors = 0
        self.first_half: list[float] = []
        self.second_half: list[float] = []
        self.labels: Counter[str] = Counter()
        self.usage: dict[tuple[str, str, str | None], UsageTotal] = {}

    def add_session(self, facts: SessionFacts, usage: Iterable[UsageTotal] | None = None) -> None:
        """Count a session in, with its usage (or only ``usage``, e.g. one provider's)."""
        self.sessions += 1
        self.turns += facts.turns
        self.duration_secs += facts.duration_secs or 0.0
        self.interruptions += facts.interruptions
        self.latencies += facts.latencies
        self.tool_statuses.update(facts.tool_statuses)
        self.errors += facts.errors
        first, second = halves(facts.valences)
        self.first_half += first
        self.second_half += second
        self.labels.update(label for _, label, _ in facts.emotions if label)
        self.add_usage(facts.usage if usage is None else usage)

    def add_usage(self, usage: Iterable[UsageTotal]) -> None:
        """Count usage in."""
        for item in usage:
            known = self.usage.get(item.key)
            self.usage[item.key] = item if known is None else known.plus(item)

    def as_dict(self, pricing: PricingSettings) -> dict[str, Any]:
        """``FIELDS`` and the extras, with the cost priced now by ``pricing``."""
        usage = list(self.usage.values())
        parts = pricing.cost_parts(usage)
        ok, failed = self.tool_statuses["ok"], self.tool_statuses["error"]
        return {
            "sessions": self.sessions,
            "turns": self.turns,
            "duration_secs": round(self.duration_secs, 3),
            "interruptions": self.interruptions,
            "latency_p50": nearest_rank(self.latencies, 50),
            "latency_p95": nearest_rank(self.latencies, 95),
            "tool_calls": sum(self.tool_statuses.values()),
            "tool_success_rate": round(ok / (ok + failed), 4) if ok + failed else None,
            "errors": self.errors,
            "llm_prompt_tokens": _sum(usage, "llm", "prompt_tokens"),
            "llm_completion_tokens": _sum(usage, "llm", "completion_tokens"),
            "tts_characters": _sum(usage, "tts", "characters"),
            "stt_audio_secs": round(_sum(usage, "stt", "audio_secs"), 3),
            "cost": _money(sum(parts.values())),
            "cost_breakdown": {service: _money(parts.get(service, 0.0)) for service in _SERVICES},
            "latency_samples": len(self.latencies),
            "tool_errors": failed,
            "valence_first_half": _mean(self.first_half),
            "valence_second_half": _mean(self.second_half),
            "emotion_labels": dict(sorted(self.labels.items())),
        }


_SERVICES = ("llm", "tts", "stt")


def _sum(usage: Iterable[UsageTotal], service: str, name: str) -> Any:
    return sum(getattr(item, name) for item in usage if item.service == service)


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 4) if values else None


def _money(amount: float) -> float:
    # Micro-units: finer than any bill, coarse enough to hide float noise (0.30000000000000004).
    return round(amount, 6)


# ----------------------------------------------------------------------------------------------
# Reports


def _order(key: GroupKey) -> tuple[bool, int | str]:
    """Groups by key (user ids as numbers), the key None last."""
    return (key is None, 0 if key is None else key)


class Analytics:
    """Reports over stored sessions, priced with a price table.

    Args:
        storage: Where the sessions are.
        pricing: The price table and currency (``Settings.pricing``).
    """

    def __init__(self, storage: Storage, pricing: PricingSettings) -> None:
        self._storage = storage
        self._pricing = pricing

    def daily(self, since: date, until: date) -> dict[str, Any]:
        """Every UTC day from ``since`` to ``until`` (inclusive, days without sessions too).

        Returns:
            ``since``, ``until``, ``currency``, ``days`` (``day`` and the figures) and
            ``totals``.
        """
        sessions, unlinked = load_facts(self._storage, since=since, until=until)
        days = {
            (since + timedelta(days=n)).isoformat(): Figures()
            for n in range((until - since).days + 1)
        }
        totals = Figures()
        for facts in sessions:
            days[facts.day].add_session(facts)
            totals.add_session(facts)
        for day, usage in unlinked:
            if day in days:  # always, unless a usage time was written with another offset
                days[day].add_usage([usage])
                totals.add_usage([usage])
        return {
            **self._header(since, until),
            "days": [
                {"day": day, **figures.as_dict(self._pricing)} for day, figures in days.items()
            ],
            "totals": totals.as_dict(self._pricing),
        }

    def breakdown(self, by: Grouping, since: date, until: date) -> dict[str, Any]:
        """The figures per user (id), persona or provider over the UTC days given.

        By provider, a group holds that provider's usage and the sessions that used it (a
        session counts in each of its providers). Usage whose session was erased counts under
        the key None by user or persona.

        Returns:
            ``by``, ``since``, ``until``, ``currency``, ``groups`` (``key`` and the figures,
            ordered by key, None last) and ``totals``.

        Raises:
            ValueError: ``by`` is not ``user``, ``persona`` or ``provider``.
        """
        if by not in ("user", "persona", "provider"):
            raise ValueError(f"cannot break down by {by!r}; by user, persona or provider")
        sessions, unlinked = load_facts(self._storage, since=since, until=until)
        groups: dict[GroupKey, Figures] = {}
        totals = Figures()
        for facts in sessions:
            totals.add_session(facts)
            if by == "provider":
                for provider in sorted({usage.provider for usage in facts.usage}):
                    mine = [usage for usage in facts.usage if usage.provider == provider]
                    groups.setdefault(provider, Figures()).add_session(facts, mine)
            else:
                key = facts.user_id if by == "user" else facts.persona
                groups.setdefault(key, Figures()).add_session(facts)
        for _, usage in unlinked:
            totals.add_usage([usage])
            groups.setdefault(usage.provider if by == "provider" else None, Figures()).add_usage(
                [usage]
            )
        ordered = sorted(groups.items(), key=lambda item: _order(item[0]))
        return {
            "by": by,
            **self._header(since, until),
            "groups": [{"key": key, **figures.as_dict(self._pricing)} for key, figures in ordered],
            "totals": totals.as_dict(self._pricing),
        }

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One session's figures, cost by service, emotion turn by turn and usage; None if
        there is no such session."""
        sessions, _ = load_facts(self._storage, session_id=session_id)
        if not sessions:
            return None
        (facts,) = sessions
        figures = Figures()
        figures.add_session(facts)
        return {
            "session_id": facts.id,
            "user_id": facts.user_id,
            "persona": facts.persona,
            "transport": facts.transport,
            "pipeline": facts.pipeline,
            "started_at": facts.started_at,
            "ended_at": facts.ended_at,
            "end_reason": facts.end_reason,
            "day": facts.day,
            "currency": self._pricing.currency,
            **figures.as_dict(self._pricing),
            "emotion_trend": [
                {"turn": idx, "label": label, "valence": valence}
                for idx, label, valence in facts.emotions
            ],
            "usage": [
                {**vars(usage), "cost": _money(self._pricing.cost(usage))} for usage in facts.usage
            ],
        }

    def _header(self, since: date, until: date) -> dict[str, Any]:
        return {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "currency": self._pricing.currency,
        }


# ----------------------------------------------------------------------------------------------
# mindbot report


def add_report_command(commands: argparse._SubParsersAction) -> None:
    """Add ``mindbot report [--since D] [--until D] [--by ...] [--format ...]``."""
    report = commands.add_parser(
        "report", help="sessions, latency, tool use, usage and cost over UTC days"
    )
    report.add_argument(
        "--since", type=_day_argument, help="first UTC day, YYYY-MM-DD (default: 13 days earlier)"
    )
    report.add_argument(
        "--until", type=_day_argument, help="last UTC day, inclusive (default: today)"
    )
    report.add_argument(
        "--by",
        choices=GROUPINGS,
        default="day",
        help="one row per day (default), user id, persona or provider",
    )
    report.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="a readable table (default), JSON as the API answers, or CSV",
    )
    report.set_defaults(handler=_report)


def _day_argument(text: str) -> date:
    try:
        return parse_day(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _report(args: argparse.Namespace) -> None:
    from mindbot.config import Settings
    from mindbot.logs import configure_logging
    from mindbot.storage import SQLiteStorage

    settings = Settings.load()
    configure_logging("WARNING")
    try:
        since, until = date_range(args.since, args.until)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    storage = SQLiteStorage(settings.database_path or settings.data_dir / "mindbot.db")
    try:
        analytics = Analytics(storage, settings.pricing)
        if args.by == "day":
            report = analytics.daily(since, until)
        else:
            report = analytics.breakdown(args.by, since, until)
    finally:
        storage.close()
    sys.stdout.write(render(report, args.format))


def render(report: dict[str, Any], form: str) -> str:
    """A ``daily`` or ``breakdown`` report as ``table``, ``json`` or ``csv`` text."""
    if form == "json":
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    column = report.get("by", "day")
    rows = [
        {column: row.get("key", row.get("day")), **row}
        for row in report.get("days", report.get("groups", []))
    ]
    if form == "csv":
        return _csv(column, rows)
    return _table(column, rows, report)


_CSV_EXTRAS = (
    "latency_samples",
    "tool_errors",
    "valence_first_half",
    "valence_second_half",
)


def _csv(column: str, rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    names = [column, *FIELDS, *(f"cost_{s}" for s in _SERVICES), *_CSV_EXTRAS]
    writer = csv.DictWriter(out, names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        costs = {f"cost_{s}": row["cost_breakdown"][s] for s in _SERVICES}
        writer.writerow({**row, **costs})
    return out.getvalue()


_HEADERS = (
    "sessions",
    "turns",
    "duration",
    "interrupted",
    "p50 s",
    "p95 s",
    "tools",
    "tools ok",
    "errors",
    "LLM in",
    "LLM out",
    "TTS chars",
    "STT s",
)


def _table(column: str, rows: list[dict[str, Any]], report: dict[str, Any]) -> str:
    headers = [column, *_HEADERS, f"cost {report['currency']}"]
    lines = [_cells(row.get(column), row) for row in rows]
    total = _cells("total", report["totals"])
    widths = [
        max(len(cell) for cell in cells) for cells in zip(headers, *lines, total, strict=True)
    ]
    rule = ["-" * width for width in widths]
    title = f"{report['since']} .. {report['until']} (UTC days), by {column}"
    body = [headers, rule, *lines, rule, total]
    return "\n".join([title, *(_align(cells, widths) for cells in body)]) + "\n"


def _align(cells: list[str], widths: list[int]) -> str:
    # The key reads left to right; the figures line up on their last digit.
    key, *figures = cells
    aligned = (cell.rjust(width) for cell, width in zip(figures, widths[1:], strict=True))
    return "  ".join([key.ljust(widths[0]), *aligned])


def _cells(key: Any, row: dict[str, Any]) -> list[str]:
    rate = row["tool_success_rate"]
    return [
        "(none)" if key is None else str(key),
        str(row["sessions"]),
        str(row["turns"]),
        _duration(row["duration_secs"]),
        str(row["interruptions"]),
        "-" if row["latency_p50"] is None else f"{row['latency_p50']:.2f}",
        "-" if row["latency_p95"] is None else f"{row['latency_p95']:.2f}",
        str(row["tool_calls"]),
        "-" if rate is None else f"{rate:.0%}",
        str(row["errors"]),
        str(row["llm_prompt_tokens"]),
        str(row["llm_completion_tokens"]),
        str(row["tts_characters"]),
        f"{row['stt_audio_secs']:.1f}",
        f"{row['cost']:.4f}",
    ]


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02}:{whole % 60:02}"
