"""A user's data as JSON, Markdown or CSV, for ``mindbot export`` (and the API later)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

ExportFormat = Literal["json", "md", "csv"]
CSV_COLUMNS = ["session_id", "started_at", "transport", "persona", "idx", "role", "text", "at"]


def render(export: dict[str, Any], fmt: ExportFormat) -> str:
    """Render ``Storage.export_user``'s result.

    JSON holds everything. Markdown is a readable transcript with the user's memories and
    preferences. CSV has one row per turn (the shape spreadsheets and analytics tools take).
    """
    if fmt == "json":
        return json.dumps(export, indent=2, ensure_ascii=False) + "\n"
    if fmt == "md":
        return _markdown(export)
    if fmt == "csv":
        return _csv(export)
    raise ValueError(f"unknown export format {fmt!r}")


def _markdown(export: dict[str, Any]) -> str:
    user = export["user"]
    lines = [f"# MindBot data for user {user['id']}", ""]
    if user.get("display_name"):
        lines.append(f"Name: {user['display_name']}")
    for identity in export["identities"]:
        lines.append(f"- {identity['kind']}: {identity['value']}")
    lines += ["", "## Preferences", ""]
    lines += [f"- {k}: {json.dumps(v)}" for k, v in export["preferences"].items()] or ["(none)"]
    lines += ["", "## Memories", ""]
    lines += [f"- {m['text']} ({m['kind']}, {m['created_at']})" for m in export["memories"]] or [
        "(none)"
    ]
    for session in export["sessions"]:
        lines += [
            "",
            f"## Session {session['id']}",
            "",
            f"{session['started_at']} · {session['transport']} · persona {session['persona']}"
            f" · ended: {session['end_reason'] or 'not recorded'}",
            "",
        ]
        for turn in session["turns"]:
            speaker = "Caller" if turn["role"] == "user" else "MindBot"
            cut = " (interrupted)" if turn["interrupted"] else ""
            lines.append(f"**{speaker}:** {turn['text']}{cut}  ")
    return "\n".join(lines) + "\n"


def _csv(export: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for session in export["sessions"]:
        for turn in session["turns"]:
            writer.writerow(
                {
                    "session_id": session["id"],
                    "started_at": session["started_at"],
                    "transport": session["transport"],
                    "persona": session["persona"],
                    "idx": turn["idx"],
                    "role": turn["role"],
                    "text": turn["text"],
                    "at": turn["ended_at"],
                }
            )
    return out.getvalue()
