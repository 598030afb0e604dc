"""Cross-session memory: what MindBot learned about a caller, with provenance and expiry.

At the end of a session, ``MemoryService.learn`` asks the session's LLM for a short summary and
the durable facts the caller shared (their name, preferences, ongoing topics), and stores each
as a ``MemoryRecord`` pointing back to its session and turn, with a confidence and an expiry.
At the start of the next session, ``MemoryService.recall`` loads the caller's name, preferences
and the most relevant, most recent memories within a token budget, and ``MemoryContext.render``
turns them into a short, hedged block for the system instruction.

A caller whose ``memory`` preference is false is neither remembered nor recalled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger
from pipecat.services.llm_service import FunctionCallParams

from mindbot.preferences import (
    LANGUAGE_PREFERENCE,
    LANGUAGES,
    RATE_PREFERENCE,
    VOICE_PREFERENCE,
    WAKE_PHRASE_PREFERENCE,
    parse_language,
    parse_rate,
    parse_voice,
    parse_wake_phrase,
)
from mindbot.storage import MemoryRecord, Storage

MEMORY_PREFERENCE = "memory"
NAME_PREFERENCE = "name"
TIMEZONE_PREFERENCE = "timezone"

EXTRACTION_PROMPT = """\
Below is a phone conversation between a caller and an assistant. Reply with JSON only, no
other text, in exactly this shape:
{"summary": "one or two sentences on what was discussed and anything left open",
 "name": "the caller's first name if they said it, else null",
 "facts": [{"text": "a durable fact about the caller, e.g. 'Loves hiking'",
            "turn": <number of the caller turn it came from>, "confidence": <0 to 1>}]}
Only include facts the caller said about themselves that will still be true next time."""

# One worked example: small local models follow an example far better than a description.
_EXAMPLE_CALL = """\
Assistant (turn 0): Hello!
Caller (turn 1): Hi, I'm Tom and I play the guitar.
Assistant (turn 2): Great to meet you, Tom."""
_EXAMPLE_REPLY = json.dumps(
    {
        "summary": "Tom introduced himself and talked about playing the guitar.",
        "name": "Tom",
        "facts": [{"text": "Plays the guitar", "turn": 1, "confidence": 0.9}],
    }
)

#: The reply's shape, for servers that can constrain generation to it (llama.cpp's grammar).
EXTRACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "turn": {"type": "integer"},
                    "confidence": {"type": "number"},
                },
                "required": ["text", "turn", "confidence"],
            },
        },
    },
    "required": ["summary", "name", "facts"],
}


@dataclass
class MemoryContext:
    """What MindBot recalls about a caller at the start of a session.

    Args:
        name: The caller's name, if known.
        preferences: The caller's preferences.
        memories: Relevant memories, most relevant first.
        enabled: Whether the caller allows memory (their ``memory`` preference).
    """

    name: str | None = None
    preferences: dict[str, Any] = field(default_factory=dict)
    memories: list[MemoryRecord] = field(default_factory=list)
    enabled: bool = True

    def render(self) -> str:
        """A block for the system instruction, or an empty string when nothing is known."""
        lines = []
        if self.name:
            lines.append(f"- Their name is {self.name}.")
        for memory in self.memories:
            label = "Earlier call" if memory.kind == "summary" else "Fact"
            lines.append(f"- {label}: {memory.text}")
        if not lines:
            return ""
        return (
            "What you remember about this caller from earlier calls. Use it naturally when it "
            "helps; do not recite it, and if they correct something, believe them:\n"
            + "\n".join(lines)
        )


class MemoryService:
    """Learns from finished sessions and recalls for new ones.

    Args:
        storage: Where memories live.
        token_budget: The most memory text (in tokens, about 4 characters each) to recall.
        ttl_days: How long a memory is kept.
        resolve_voice: A voice name or id → the TTS provider's voice id, or None when the
            voice catalog does not know it (``VoiceCatalog.resolver``); without it, any
            well-formed voice is stored.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        token_budget: int = 300,
        ttl_days: int = 180,
        resolve_voice: Callable[[str], str | None] | None = None,
    ):
        self._storage = storage
        self._resolve_voice = resolve_voice
        self._budget_chars = token_budget * 4
        self._ttl = timedelta(days=ttl_days)

    def enabled_for(self, user_id: int) -> bool:
        """Whether the user allows memory (their ``memory`` preference; on by default)."""
        return self._storage.preferences(user_id).get(MEMORY_PREFERENCE, True) is not False

    def remember(self, user_id: int, text: str, *, session_id: str | None = None) -> int:
        """Store something the caller asked MindBot to remember (blocking; use a thread)."""
        expires = (datetime.now(UTC) + self._ttl).isoformat()
        record = MemoryRecord(user_id, text, "fact", 1.0, session_id, expires_at=expires)
        return self._storage.add_memory(record)

    def set_preference(self, user_id: int, preference: str, value: str) -> dict[str, Any]:
        """Set a preference (``name``, ``memory``, ``timezone``, ``speaking_rate``, ``language``,
        ``voice``, ``wake_phrase``) from what the caller said; an error result if the value is
        invalid."""
        value = " ".join(str(value).split())
        if preference == NAME_PREFERENCE:
            if not 0 < len(value) <= 40:
                return {"error": "a name must be 1 to 40 characters"}
            self._storage.set_preference(user_id, NAME_PREFERENCE, value)
            return {"name": value}
        if preference == MEMORY_PREFERENCE:
            switch = value.lower()
            if switch not in ("on", "off", "true", "false", "yes", "no"):
                return {"error": "memory must be 'on' or 'off'"}
            on = switch in ("on", "true", "yes")
            self._storage.set_preference(user_id, MEMORY_PREFERENCE, on)
            return {"memory": "on" if on else "off"}
        if preference == TIMEZONE_PREFERENCE:
            zone = _time_zone(value)
            if zone is None:
                return {"error": "a time zone must be an IANA name such as Europe/London"}
            self._storage.set_preference(user_id, TIMEZONE_PREFERENCE, zone)
            return {"timezone": zone}
        if preference == RATE_PREFERENCE:
            rate = parse_rate(value)
            if rate is None:
                return {"error": "a speaking rate must be slow, normal, fast or 0.6 to 1.5"}
            self._storage.set_preference(user_id, RATE_PREFERENCE, rate)
            return {RATE_PREFERENCE: rate, "applies": "from the next call"}
        if preference == LANGUAGE_PREFERENCE:
            code = parse_language(value)
            if code is None:
                return {"error": f"supported languages: {', '.join(LANGUAGES.values())}"}
            self._storage.set_preference(user_id, LANGUAGE_PREFERENCE, code)
            return {LANGUAGE_PREFERENCE: LANGUAGES[code], "applies": "from the next call"}
        if preference == VOICE_PREFERENCE:
            voice = parse_voice(value)
            if voice is not None and self._resolve_voice is not None:
                voice = self._resolve_voice(voice)
            if voice is None:
                return {"error": f"there is no voice called {str(value)[:40]!r}"}
            self._storage.set_preference(user_id, VOICE_PREFERENCE, voice)
            return {VOICE_PREFERENCE: voice, "applies": "from the next call"}
        if preference == WAKE_PHRASE_PREFERENCE:
            if value.strip().lower() in ("", "none", "off"):
                self._storage.set_preference(user_id, WAKE_PHRASE_PREFERENCE, None)
                return {WAKE_PHRASE_PREFERENCE: "none", "applies": "from the next call"}
            phrase = parse_wake_phrase(value)
            if phrase is None:
                return {"error": "a wake phrase must be two to six words"}
            self._storage.set_preference(user_id, WAKE_PHRASE_PREFERENCE, phrase)
            return {WAKE_PHRASE_PREFERENCE: phrase, "applies": "from the next call"}
        return {
            "error": f"unknown preference {preference[:40]!r}; known: name, memory, timezone, "
            "speaking_rate, language, voice, wake_phrase"
        }

    def forget(self, user_id: int, about: str) -> int:
        """Delete the memories about ``about`` ("everything" deletes all); returns how many."""
        words = _words(about)
        memories = self._storage.memories(user_id, include_expired=True)
        if about.strip().lower() in ("everything", "all", "all of it"):
            doomed = memories
        else:
            doomed = [m for m in memories if words & _words(m.text)]
        for memory in doomed:
            assert memory.id is not None
            self._storage.delete_memory(memory.id)
        return len(doomed)

    def recall(self, user_id: int, *, query: str = "") -> MemoryContext:
        """The caller's name, preferences and most relevant memories (blocking; use a thread)."""
        preferences = self._storage.preferences(user_id)
        if preferences.get(MEMORY_PREFERENCE, True) is False:
            return MemoryContext(preferences=preferences, enabled=False)
        user = self._storage.get_user(user_id)
        name = preferences.get(NAME_PREFERENCE) or (user.display_name if user else None)
        words = _words(query)
        ranked = sorted(
            self._storage.memories(user_id, limit=200),
            key=lambda m: (len(words & _words(m.text)), m.kind == "summary", m.created_at),
            reverse=True,
        )
        chosen, used = [], 0
        for memory in ranked:
            if used + len(memory.text) > self._budget_chars:
                continue
            chosen.append(memory)
            used += len(memory.text)
        return MemoryContext(name=name, preferences=preferences, memories=chosen)

    async def learn(self, session_id: str, user_id: int, llm, *, constrained: bool = False) -> int:
        """Summarize a finished session and store what the caller shared about themselves.

        Args:
            session_id: The finished session.
            user_id: Its caller.
            llm: An ``openai.AsyncOpenAI``-like client and model, as ``(client, model)``.
            constrained: Ask the server to constrain the reply to ``EXTRACTION_SCHEMA``
                (llama.cpp's ``response_format`` with a schema; OpenAI does not take this form).

        Returns:
            How many memories were stored (0 when memory is off or nothing was said).
        """
        import asyncio

        if not await asyncio.to_thread(self.enabled_for, user_id):
            return 0
        turns = await asyncio.to_thread(self._storage.turns, session_id)
        said = [t for t in turns if t.role == "user" and t.text.strip()]
        if not said:
            return 0
        # A small local model confuses the assistant's words with the caller's ("Hi, I'm
        # MindBot" became the caller's name), so it reads only what the caller said.
        shown = said if constrained else turns
        transcript = "\n".join(
            f"{'Caller' if t.role == 'user' else 'Assistant'} (turn {t.idx}): {t.text}"
            for t in shown
        )
        client, model = llm
        extra = {"response_format": {"type": "json_object", "schema": EXTRACTION_SCHEMA}}
        try:
            response = await client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": EXTRACTION_PROMPT},
                    {"role": "user", "content": _EXAMPLE_CALL},
                    {"role": "assistant", "content": _EXAMPLE_REPLY},
                    {"role": "user", "content": transcript},
                ],
                temperature=0,
                max_tokens=300,
                extra_body=extra if constrained else None,
            )
            found = _parse(response.choices[0].message.content or "")
        except Exception as e:
            logger.warning(f"MemoryService: learning from a session failed ({type(e).__name__})")
            return 0
        if found is None:
            logger.warning("MemoryService: the LLM's memory reply was not the expected JSON")
            return 0
        logger.debug(f"MemoryService: the LLM found {found!r}")
        return await asyncio.to_thread(self._store, session_id, user_id, found, said)

    def _store(self, session_id: str, user_id: int, found: dict, said: list) -> int:
        expires = (datetime.now(UTC) + self._ttl).isoformat()
        last_turn = said[-1].idx
        records = []
        summary = found.get("summary")
        if isinstance(summary, str) and summary.strip():
            records.append(
                MemoryRecord(
                    user_id,
                    summary.strip(),
                    "summary",
                    1.0,
                    session_id,
                    last_turn,
                    expires_at=expires,
                )
            )
        for fact in found.get("facts") or []:
            if not isinstance(fact, dict) or not isinstance(fact.get("text"), str):
                continue
            turn = fact.get("turn") if isinstance(fact.get("turn"), int) else last_turn
            confidence = fact.get("confidence")
            confidence = float(confidence) if isinstance(confidence, int | float) else 0.7
            records.append(
                MemoryRecord(
                    user_id,
                    fact["text"].strip(),
                    "fact",
                    min(1.0, max(0.0, confidence)),
                    session_id,
                    turn,
                    expires_at=expires,
                )
            )
        for record in records:
            self._storage.add_memory(record)
        name = found.get("name")
        words = " ".join(t.text for t in said).lower()
        # Only a name the caller actually said: a model may echo the prompt or invent one.
        if isinstance(name, str) and 0 < len(name.strip()) <= 40 and name.strip().lower() in words:
            self._storage.set_preference(user_id, NAME_PREFERENCE, name.strip())
        logger.info(f"MemoryService: stored {len(records)} memories from a session")
        return len(records)


MAX_FACT_CHARS = 300


def memory_tools(memory: MemoryService, user_id: int, session_id: str, *, enabled: bool) -> list:
    """The caller's spoken memory control, as LLM direct functions bound to one session.

    ``set_preference`` is always offered (so memory can be turned back on); ``remember``,
    ``forget`` and ``recall_memories`` only while memory is on. They run in a thread (the event
    loop never waits on the disk) and answer with a result the LLM can speak about, never an
    exception.
    """
    import asyncio

    async def set_preference(params: FunctionCallParams, preference: str, value: str):
        """Change one of the caller's preferences, because they asked you to.

        Args:
            preference: "name" (what to call the caller), "memory" ("on" or "off": whether
                you remember them from one call to the next), "timezone" (an IANA name such
                as "Europe/London", for times and dates), "speaking_rate" ("slow", "normal" or
                "fast"), "language" (e.g. "Spanish"), "voice" (a voice's name or id) or
                "wake_phrase" (what they say to wake you, e.g. "hey mindbot", or "none"); the
                last four apply from the caller's next call.
            value: The new value.
        """
        result = await asyncio.to_thread(memory.set_preference, user_id, preference, value)
        await params.result_callback(result)

    async def remember(params: FunctionCallParams, fact: str):
        """Remember something about the caller because they asked you to.

        Args:
            fact: What to remember, as a short statement about the caller.
        """
        fact = " ".join(str(fact).split())
        if not fact or len(fact) > MAX_FACT_CHARS:
            result = {"error": f"a fact must be 1 to {MAX_FACT_CHARS} characters"}
        else:
            await asyncio.to_thread(memory.remember, user_id, fact, session_id=session_id)
            result = {"remembered": fact}
        await params.result_callback(result)

    async def forget(params: FunctionCallParams, about: str):
        """Forget what you remember about something, because the caller asked you to.

        Args:
            about: A few words naming what to forget, or "everything".
        """
        count = await asyncio.to_thread(memory.forget, user_id, str(about)[:MAX_FACT_CHARS])
        await params.result_callback({"forgotten": count})

    async def recall_memories(params: FunctionCallParams):
        """List what you remember about the caller, when they ask what you know about them."""
        known = await asyncio.to_thread(memory.recall, user_id)
        await params.result_callback(
            {"name": known.name, "memories": [m.text for m in known.memories]}
        )

    if not enabled:
        return [set_preference]
    return [set_preference, remember, forget, recall_memories]


def _time_zone(value: str) -> str | None:
    """The IANA zone named by ``value`` (any case, spaces for underscores), or None."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    wanted = value.strip().replace(" ", "_").lower()
    for zone in available_timezones():
        if zone.lower() == wanted:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                return None
            return zone
    return None


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) > 3}


def _parse(reply: str) -> dict | None:
    """The first JSON object in the reply (models like to wrap JSON in prose or fences)."""
    start = reply.find("{")
    end = reply.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(reply[start : end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
