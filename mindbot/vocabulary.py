"""Recognition tuning: the words a caller is likely to say that a speech recognizer may not know.

A session's vocabulary is a list of terms, most important first: the deployment's own list
(``audio.vocabulary``), the caller's name and the proper nouns of what MindBot remembers about
them, the caller's own terms, then the knowledge base's document titles and its most frequent
proper nouns. ``deepgram_keyterms`` and ``whisper_prompt`` cut that list to what each
recognizer accepts: Deepgram takes at most 100 keyterms of 500 tokens in all; faster-whisper
puts hotwords in the decoder's prompt, which it cuts at 223 tokens, and a long prompt biases a
small model towards words that were not said, so it gets fewer.

Finding a knowledge base's proper nouns is a regex pass, no model: a word counts when it is
written with a capital (or inner capitals, or letters and digits, as in "TrailSync" or "X2") and
never in lower case anywhere in the text, so "Leave" in a heading is not a name when "leave"
appears in a sentence. Words seen mid-sentence rank above words only seen at the start of one.

Pure functions, no I/O: callers pass the texts (``KnowledgeBase.list()`` titles and
``KnowledgeBase.passages()`` texts; compute these once per knowledge-base sync, not per call).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mindbot.audio_settings import MAX_PHRASE_CHARS, clean_phrase

if TYPE_CHECKING:
    from mindbot.memory import MemoryContext

DEEPGRAM_MAX_TERMS = 100
"""Deepgram's limit on keyterms per request."""

DEEPGRAM_MAX_TOKENS = 450
"""Estimated tokens kept for Deepgram keyterms (its limit is 500; the estimate is rough)."""

WHISPER_MAX_TERMS = 30
"""Terms in Whisper's prompt; more makes tiny.en write listed words that were not said."""

WHISPER_MAX_CHARS = 400
"""Characters in Whisper's prompt (about 150 tokens, under faster-whisper's cut at 223)."""

KB_TERMS = 40
"""Proper nouns taken from a knowledge base's text."""

MAX_TEXT_CHARS = 2_000_000
"""Text read when looking for terms; the rest of a very large knowledge base is skipped."""

_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+|^\s*[-*#>|]+\s*", re.MULTILINE)
_WORD = re.compile(r"[^\W_](?:[\w’'-]*[^\W_])?")

# Words written with a capital at the start of a sentence or in a title that are not names.
_COMMON = frozenset(
    """a about after again all also am an and any are as at be because been before being
    both but by can could did do does doing during each every few for from further had has
    have having he her here hers him his how i if in into is it its just me more most my
    no nor not now of off on once only or other our ours out over own same she should so
    some such than that the their theirs them then there these they this those through to
    too under until up very was we were what when where which while who whom why will with
    would you your yours yes hi hello hey please thanks thank ok okay dear note see each one
    two three four five six seven eight nine ten first second third last next new monday
    tuesday wednesday thursday friday saturday sunday january february march april may june
    july august september october november december today tomorrow yesterday mr mrs ms dr""".split()
)


def build_vocabulary(
    *,
    deployment: Iterable[str] = (),
    memory: MemoryContext | None = None,
    user_terms: Iterable[str] = (),
    kb_titles: Iterable[str] = (),
    kb_texts: Iterable[str] = (),
    kb_limit: int = KB_TERMS,
) -> list[str]:
    """A session's vocabulary, most important first, without repeats.

    Args:
        deployment: The deployment's terms (``Settings.audio.vocabulary``).
        memory: What MindBot recalls about the caller: their name, then the proper nouns of
            their remembered facts (in the order they were recalled).
        user_terms: The caller's own terms, if they have any.
        kb_titles: The knowledge base's document titles.
        kb_texts: The knowledge base's passages, for their most frequent proper nouns.
        kb_limit: How many proper nouns to take from ``kb_texts``.
    """
    memory_terms: list[str] = []
    if memory is not None:
        memory_terms.append(getattr(memory, "name", None) or "")
        facts = [getattr(m, "text", "") for m in getattr(memory, "memories", None) or ()]
        memory_terms.extend(proper_nouns(facts, limit=20, sentence_starts=False))
    return merge_terms(
        deployment,
        memory_terms,
        user_terms,
        kb_titles,
        proper_nouns(kb_texts, limit=kb_limit),
    )


def merge_terms(*lists: Iterable[object]) -> list[str]:
    """The usable terms of ``lists``, in order, without case-insensitive repeats.

    A term is usable when ``mindbot.audio_settings.clean_phrase`` accepts it (a short phrase
    with a letter or digit); anything else (``None``, numbers, 10k-character strings) is
    dropped.
    """
    seen: set[str] = set()
    terms = []
    for items in lists:
        for item in items or ():
            term = clean_phrase(item)
            if term is not None and term.casefold() not in seen:
                seen.add(term.casefold())
                terms.append(term)
    return terms


def proper_nouns(
    texts: Iterable[str], *, limit: int = KB_TERMS, sentence_starts: bool = True
) -> list[str]:
    """The names, places and product terms of ``texts``, most frequent first.

    Args:
        texts: Passages of text (anything that is not a ``str`` is skipped).
        limit: The most terms returned.
        sentence_starts: Whether a word only ever seen capitalized at the start of a sentence
            may count. Remembered facts open with a verb ("Loves hiking"), so for them it
            may not.
    """
    mid: Counter[str] = Counter()
    initial: Counter[str] = Counter()
    lower: set[str] = set()
    spellings: dict[str, Counter[str]] = {}
    budget = MAX_TEXT_CHARS
    for text in texts:
        if not isinstance(text, str) or budget <= 0:
            continue
        text = text[:budget]
        budget -= len(text)
        for sentence in _SENTENCE.split(text):
            for position, match in enumerate(_WORD.finditer(sentence)):
                word = match.group()
                key = word.casefold()
                if not _is_marked(word):
                    lower.add(key)
                    continue
                if not 2 <= len(word) <= MAX_PHRASE_CHARS or word.isdigit() or key in _COMMON:
                    continue
                if position == 0 and not sentence_starts and not _is_distinct([word]):
                    continue
                counter = mid if position > 0 else initial
                counter[key] += 1
                spellings.setdefault(key, Counter())[word] += 1
    scores = Counter({key: 2 * n for key, n in mid.items()})
    scores.update(initial)
    ranked = [
        key
        for key, _ in sorted(scores.items(), key=lambda item: -item[1])
        if key not in lower or _is_distinct(spellings[key])
    ]
    return [spellings[key].most_common(1)[0][0] for key in ranked[: max(0, limit)]]


def deepgram_keyterms(terms: Sequence[str]) -> list[str]:
    """The first of ``terms`` that fit Deepgram's keyterm limits (100 terms, 500 tokens)."""
    kept: list[str] = []
    tokens = 0
    for term in merge_terms(terms):
        cost = _estimated_tokens(term)
        if len(kept) == DEEPGRAM_MAX_TERMS or tokens + cost > DEEPGRAM_MAX_TOKENS:
            break
        kept.append(term)
        tokens += cost
    return kept


def whisper_prompt(terms: Sequence[str]) -> str:
    """The first of ``terms`` as Whisper hotwords: comma-separated, short enough to help.

    A comma-separated list measured better than a space-separated one with tiny.en: with
    spaces, neighbouring names ran together ("Wojciechowski" came out as two words).
    """
    kept: list[str] = []
    length = 0
    for term in merge_terms(terms)[:WHISPER_MAX_TERMS]:
        if length + len(term) + 2 > WHISPER_MAX_CHARS:
            break
        kept.append(term)
        length += len(term) + 2
    return ", ".join(kept)


def _is_marked(word: str) -> bool:
    """Written as a name would be: a capital, inner capitals, or letters mixed with digits."""
    return word[0].isupper() or _inner_capitals(word) or _mixes_digits(word)


def _mixes_digits(word: str) -> bool:
    return any(c.isdigit() for c in word) and any(c.isalpha() for c in word)


def _is_distinct(spellings: Iterable[str]) -> bool:
    """Inner capitals or digits ("TrailSync", "X2") mark a term even if also seen lowercase."""
    return any(_inner_capitals(w) or _mixes_digits(w) for w in spellings)


def _inner_capitals(word: str) -> bool:
    return any(c.isupper() for c in word[1:]) and any(c.islower() for c in word)


def _estimated_tokens(term: str) -> int:
    # Rare words split into short pieces; three characters a token errs on the safe side.
    return sum(math.ceil(len(word) / 3) for word in term.split())
