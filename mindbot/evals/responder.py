"""The eval suite's scripted LLM: answers from what MindBot put in the request, and nothing else.

In CI the suite runs against ``ScriptedLLMServer`` (the OpenAI stand-in) with this responder as
its default reply. It knows no facts of its own: a name comes from an earlier turn of the
request, a memory from the system instruction, an answer with its source from the knowledge
passages, an arithmetic result from the calculator's tool result. So a reply that passes a
scenario's check is evidence that MindBot carried the right context to the LLM; a missing turn,
memory or passage makes the check fail.

The request shapes are OpenAI's chat completions (``messages``, ``tools``), as Pipecat's
``OpenAILLMService`` and MindBot's memory learning send them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mindbot.memory import EXTRACTION_PROMPT
from mindbot.standins import Reply, Text, ToolCall

FALLBACK = "Okay."
"""The reply when nothing in the request calls for a particular answer."""

TIME_ZONES = {
    "tokyo": "Asia/Tokyo",
    "london": "Europe/London",
    "paris": "Europe/Paris",
    "new york": "America/New_York",
    "sydney": "Australia/Sydney",
}
"""The places the responder can ask the clock about."""

OPERATORS = {"times": "*", "multiplied by": "*", "plus": "+", "minus": "-", "divided by": "/"}
_SYMBOL_WORDS = {"*": "times", "+": "plus", "-": "minus", "/": "divided by"}

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {word: n for n, word in enumerate(_ONES)} | {
    word: 10 * n for n, word in enumerate(_TENS) if n >= 2
}

_NAME = re.compile(r"\bmy name is (\w+)", re.IGNORECASE)
_LIKES = re.compile(r"\bI (?:really )?(love|like|enjoy) ([a-z][a-z ]*)", re.IGNORECASE)
_ASKS_NAME = re.compile(r"\bwhat(?: is|'s) my name\b", re.IGNORECASE)
_ASKS_MEMORY = re.compile(r"\b(?:remember|know) about me\b", re.IGNORECASE)
_REMEMBERED_NAME = re.compile(r"Their name is (\w+)\.")
_REMEMBERED_FACT = re.compile(r"^- Fact: (.+)$", re.MULTILINE)
_PASSAGE = re.compile(r'^\[\d+\] (?P<label>[^:\n]+): "(?P<text>.*)"$', re.MULTILINE)


def number_words(value: int) -> str:
    """An integer as it is spoken: ``84`` → ``eighty four`` (digits from a million on).

    Args:
        value: The number.
    """
    if value < 0:
        return f"minus {number_words(-value)}"
    if value < 20:
        return _ONES[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    if value < 1_000_000:
        thousands, rest = divmod(value, 1000)
        return f"{number_words(thousands)} thousand" + (f" {number_words(rest)}" if rest else "")
    return str(value)


def respond(body: dict[str, Any]) -> Reply:
    """The reply to one chat-completions request (``ScriptedLLMServer``'s ``default_reply``).

    Args:
        body: The request body as the server received it.
    """
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    if not messages:
        return Text(FALLBACK)
    if _text(messages[0]) == EXTRACTION_PROMPT:
        return Text(json.dumps(_extract_memories(_text(messages[-1]))))
    if messages[-1].get("role") == "tool":
        return Text(_speak_tool_result(_text(messages[-1])))
    said = _last_user_text(messages)
    offered = {tool.get("function", {}).get("name") for tool in body.get("tools") or []}
    return _answer(said, messages, offered)


def _answer(said: str, messages: list[dict[str, Any]], offered: set[Any]) -> Reply:
    """The reply to what the caller just said, from the request's own context."""
    lowered = said.lower()
    if "calculate" in offered and (expression := _expression(lowered)):
        return ToolCall("calculate", {"expression": expression})
    if "current_time" in offered and "time" in lowered:
        zone = next((z for place, z in TIME_ZONES.items() if place in lowered), None)
        if zone:
            return ToolCall("current_time", {"timezone": zone})
    if passage := _knowledge(messages):
        label, text = passage
        return Text(f"According to the {label}: {_best_sentence(text, said)}")
    if _ASKS_NAME.search(said):
        return Text(_recall_name(messages))
    if _ASKS_MEMORY.search(said):
        return Text(_recall_facts(messages))
    if match := _NAME.search(said):
        return Text(f"Nice to meet you, {match.group(1)}.")
    if "capital of france" in lowered:
        return Text("Paris is the capital of France.")
    return Text(FALLBACK)


def _text(message: dict[str, Any]) -> str:
    """A message's text, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


def _system_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_text(m) for m in messages if m.get("role") in ("system", "developer"))


def _expression(lowered: str) -> str | None:
    """``12 * 7`` from "what is twelve times seven" (or "12 times 7"), else None."""
    words = re.sub(r"[^\w. ]", " ", lowered)
    for phrase, symbol in OPERATORS.items():
        left, found, right = words.partition(f" {phrase} ")
        if not found:
            continue
        a, b = _number_before(left), _number_after(right)
        if a is not None and b is not None:
            return f"{a} {symbol} {b}"
    return None


def _number_before(text: str) -> int | None:
    tokens = text.split()
    if tokens and tokens[-1].isdigit():
        return int(tokens[-1])
    return _words_value(tokens[-2:]) or _words_value(tokens[-1:])


def _number_after(text: str) -> int | None:
    tokens = text.split()
    if tokens and tokens[0].isdigit():
        return int(tokens[0])
    return _words_value(tokens[:2]) or _words_value(tokens[:1])


def _words_value(tokens: list[str]) -> int | None:
    """The value of one or two number words ("seven", "eighty four"), else None."""
    if not tokens or not all(t in _NUMBER_WORDS for t in tokens):
        return None
    values = [_NUMBER_WORDS[t] for t in tokens]
    if len(values) == 2 and not (values[0] % 10 == 0 and values[0] >= 20 and values[1] < 10):
        return None
    return sum(values)


def _speak_tool_result(content: str) -> str:
    """One sentence about a tool's result (MindBot sends ``{"ok": ..., "result": ...}``)."""
    try:
        payload = json.loads(content)
    except json.JSONDecodeError:
        return "One moment."
    if not isinstance(payload, dict) or not payload.get("ok"):
        return "Sorry, I couldn't do that."
    result = payload.get("result")
    if isinstance(result, dict) and "expression" in result and "result" in result:
        return f"{_spoken_expression(str(result['expression']))} is {_spoken(result['result'])}."
    if isinstance(result, dict) and "time" in result and "timezone" in result:
        place = str(result["timezone"]).rsplit("/", 1)[-1].replace("_", " ")
        return f"It's {result['time']} in {place}."
    return "Done."


def _spoken_expression(expression: str) -> str:
    parts = [_SYMBOL_WORDS.get(t) or _spoken(t) for t in expression.split()]
    return " ".join(parts).capitalize()


def _spoken(value: Any) -> str:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return number_words(int(value))
    return str(value)


def _knowledge(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The first knowledge passage MindBot put in the request, as ``(label, text)``."""
    for message in messages:
        if message.get("name") != "knowledge":
            continue
        if match := _PASSAGE.search(_text(message)):
            return match.group("label"), match.group("text")
    return None


def _best_sentence(text: str, question: str) -> str:
    """The passage's sentence sharing the most words with the question."""
    asked = set(re.findall(r"\w+", question.lower()))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    return max(sentences, key=lambda s: len(asked & set(re.findall(r"\w+", s.lower()))))


def _recall_name(messages: list[dict[str, Any]]) -> str:
    """The caller's name from an earlier turn, else from the remembered facts."""
    for message in messages[:-1]:
        if message.get("role") == "user" and (match := _NAME.search(_text(message))):
            return f"Your name is {match.group(1)}."
    if match := _REMEMBERED_NAME.search(_system_text(messages)):
        return f"Your name is {match.group(1)}."
    return "I don't know your name yet."


def _recall_facts(messages: list[dict[str, Any]]) -> str:
    facts = _REMEMBERED_FACT.findall(_system_text(messages))
    if not facts:
        return "I don't remember anything about you yet."
    return "I remember this about you: " + "; ".join(f.rstrip(".") for f in facts) + "."


def _extract_memories(transcript: str) -> dict[str, Any]:
    """The memory-learning reply: the caller's name and likes, as MindBot asks for them."""
    name = None
    facts = []
    for turn, text in re.findall(r"^Caller \(turn (\d+)\): (.*)$", transcript, re.MULTILINE):
        if match := _NAME.search(text):
            name = match.group(1)
        for verb, what in _LIKES.findall(text):
            facts.append({"text": f"{verb.capitalize()}s {what.strip()}", "turn": int(turn)})
    for fact in facts:
        fact["confidence"] = 0.9
    summary = "The caller introduced themselves." if name else "The caller chatted briefly."
    return {"summary": summary, "name": name, "facts": facts}
