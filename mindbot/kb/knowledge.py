"""The knowledge base: documents in, passages out, fast enough for a live phone call.

``KnowledgeBase`` owns one collection (a knowledge base per persona or tenant): its vector store
(``mindbot.kb.stores``, ``<collection>.sqlite``) and a small catalog of its documents
(``<collection>.documents.db``: doc id, source, title, content hash, chunk count, dates).

Ingestion (``add``, ``sync``, ``reindex``, ``watch``), for each file, folder (recursive) or URL:

1. Refuse what may not be read: paths outside ``allowed_dirs`` (``..`` and symbolic links are
   resolved first), URLs resolving to loopback, private or link-local addresses (checked before
   connecting and again on the connected socket, redirects included), anything over
   ``max_file_mb``, unsupported types.
2. Hash the raw bytes; a document whose hash (and chunking) is unchanged is skipped before it is
   even parsed.
3. Parse it into sections (``mindbot.kb.readers``: headings, PDF pages), then cut each section
   with LlamaIndex's ``SentenceSplitter``, sized in the embedding model's own word pieces so a
   chunk (with the headings it is embedded with) never exceeds the 256 the model reads. A chunk
   that addresses the assistant ("ignore previous instructions...") is left out, with a warning.
4. Embed the chunks in batches and write them; a changed document's new chunks are written
   before its old ones are deleted, so a search during the swap never finds it missing.

Each chunk's metadata: ``doc_id`` (the path relative to the folder it was added from, or the
URL), ``source``, ``file`` or ``url``, ``title`` (the document's own, or its file name in
words), ``section`` (nearest heading), ``page`` (PDF), ``doc_hash`` (SHA-256 of the document).

Why a loop of our own rather than ``IngestionPipeline`` with a docstore: the pipeline dedups
per LlamaIndex ``Document`` after reading, while here a document is a file (many section
documents) whose hash is known before parsing, so unchanged files cost a hash and nothing else;
the pipeline's docstore would be a second copy of every text, persisted as one JSON file,
unsafe for the CLI and the server writing at once (the catalog is SQLite); and the pipeline
stops at the first reader error, while here each source fails alone, with a reason.

Bad input never stops the rest: every source that cannot be used is in the report's
``skipped`` with a one-line reason, and the index keeps what it had. Folder walks leave out
hidden files and folders and do not follow links to folders.

Search is one query embedding and one store query (exact cosine); passages under ``min_score``
are dropped, so small talk retrieves nothing. Searches need no lock and may run from any thread
(``asearch`` runs one on a worker thread); writes are serialized by a lock. Measured on the
2-core development machine: 7.1 ms median, 7.9 ms p95 per search at 50,000 chunks (3.9 ms of
it the query embedding); ingestion about 45 chunks per second, nearly all of it embedding.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import ipaddress
import math
import os
import re
import socket
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import yaml
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import (
    Document,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import VectorStoreQuery
from loguru import logger

from mindbot.errors import MindBotError, StorageError
from mindbot.kb.readers import (
    CONTENT_TYPES,
    SUPPORTED_SUFFIXES,
    ReadError,
    Section,
    file_title,
    parse_document,
)
from mindbot.kb.settings import KnowledgeSettings
from mindbot.kb.stores import open_vector_store

# Bump when parsing or chunking changes, so every document is re-embedded at its next sync.
_PIPELINE_VERSION = 1
_CATALOG_SCHEMA = 2  # 2: the meta table (which embedding model)
_MAX_REDIRECTS = 5
_USER_AGENT = "MindBot-KnowledgeBase/1"
_WATCH_RETRY_S = 5.0
_TOKENS_PER_WORD = 1.35  # all-MiniLM-L6-v2's word pieces per English word, measured on the corpus
_EMBEDDED = ("topic",)
"""The metadata a chunk is embedded with: the headings above it, under the document's title.

Measured on tests/fixtures/kb/eval.yaml (hit@1 / hit@3 / MRR; best small-talk score; lowest
score of an expected passage): title + section 0.74 / 0.92 / 0.82, 0.25, 0.22; title + heading
path 0.72 / 0.91 / 0.80; heading path alone 0.76 / 0.92 / 0.83, 0.23, 0.28 (the widest gap
between small talk and answers, so the surest threshold).
"""


class KnowledgeError(MindBotError):
    """A knowledge-base operation cannot be done (e.g. an unknown document)."""


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedSource:
    """A source that was not ingested, or a part of one that was left out.

    Attributes:
        source: The path or URL as given (or found in a folder).
        reason: One line saying why.
    """

    source: str
    reason: str


@dataclass
class IngestReport:
    """What an ingestion did.

    Attributes:
        added: Doc ids of the documents indexed for the first time.
        updated: Doc ids of the documents re-indexed because they changed.
        unchanged: Doc ids of the documents skipped because their hash was the same.
        removed: Doc ids of the documents removed (their file is gone).
        skipped: Sources not ingested, each with a reason; the index keeps what it had.
        warnings: Parts of ingested documents that were left out, with a reason.
        chunks: Chunks embedded and written.
        seconds: Wall time of the whole ingestion.
        embed_seconds: Time spent embedding.
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[SkippedSource] = field(default_factory=list)
    warnings: list[SkippedSource] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        """Chunks parsed, embedded and stored per second of the whole ingestion."""
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    @property
    def changed(self) -> bool:
        """Whether the index changed."""
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        """One line: the counts, chunks and speed."""
        text = (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
            f"{len(self.skipped)} skipped; {self.chunks} chunks in {self.seconds:.1f} s"
        )
        if self.chunks:
            text += f" ({self.chunks_per_s:.0f} chunks/s)"
        return text


@dataclass(frozen=True)
class DocumentInfo:
    """A document in the knowledge base.

    Attributes:
        doc_id: Its id: the path relative to the folder it was added from, or the URL.
        title: Its title.
        source: The absolute path or the URL it is read from.
        chunks: How many chunks it has in the index.
        added_at: When it was first added (UTC).
        updated_at: When it was last re-indexed (UTC).
        content_hash: SHA-256 of its bytes.
    """

    doc_id: str
    title: str
    source: str
    chunks: int
    added_at: datetime
    updated_at: datetime
    content_hash: str


@dataclass(frozen=True)
class Passage:
    """A retrieved passage, ready to be read out or quoted.

    Attributes:
        text: The chunk's text, cleaned for speech (no markdown symbols or table pipes, URLs
            shortened, whitespace collapsed).
        score: Cosine similarity to the query.
        doc_id: The document's id.
        title: The document's title.
        section: The nearest heading above the passage ("" if none).
        page: The PDF page, or None.
        source: The document's path or URL.
    """

    text: str
    score: float
    doc_id: str
    title: str
    section: str
    page: int | None
    source: str

    @property
    def label(self) -> str:
        """Where it comes from, as said aloud: ``Employee handbook, section Leave, page 3``."""
        parts = [self.title]
        if self.section and _normalize(self.section) != _normalize(self.title):
            parts.append(f"section {self.section}")
        if self.page is not None:
            parts.append(f"page {self.page}")
        return ", ".join(parts)


@dataclass(frozen=True)
class QuestionResult:
    """One evaluation question and what the search returned.

    Attributes:
        id: The question's id.
        question: The question.
        expected_source: The file that answers it; None for small talk.
        expected_section: The section that answers it; None for small talk.
        rank: The rank (from 1) of the first passage from that file and section; None if none.
        labels: The labels of the passages returned, best first.
        scores: Their scores.
    """

    id: str
    question: str
    expected_source: str | None
    expected_section: str | None
    rank: int | None
    labels: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def correct(self) -> bool:
        """A hit within the passages returned; for small talk, that nothing was returned."""
        return self.rank is not None if self.expected_source else not self.labels


@dataclass(frozen=True)
class EvalResult:
    """Retrieval quality over an evaluation set.

    Attributes:
        hit1: Share of answerable questions whose first passage is from the expected section.
        hit3: Share whose top three passages include one from the expected section.
        mrr: Mean reciprocal rank of the first such passage (0 when none).
        none_correct: Share of small-talk utterances for which nothing was returned.
        per_question: Every question's result.
    """

    hit1: float
    hit3: float
    mrr: float
    none_correct: float
    per_question: tuple[QuestionResult, ...]

    @property
    def answerable(self) -> int:
        """How many questions have an expected section."""
        return sum(1 for q in self.per_question if q.expected_source)

    @property
    def small_talk(self) -> int:
        """How many utterances expect nothing."""
        return len(self.per_question) - self.answerable


@dataclass(frozen=True)
class SearchSpeed:
    """Search latency measured by ``KnowledgeBase.measure_search``.

    Attributes:
        p50_ms: Median milliseconds per search.
        p95_ms: 95th percentile.
        searches: How many searches were timed.
        chunks: Chunks in the collection.
    """

    p50_ms: float
    p95_ms: float
    searches: int
    chunks: int


# --- The knowledge base -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """One document to ingest: a file (``path``) or a URL."""

    source: str  # absolute path (lexical, links not resolved) or URL
    doc_id: str  # the id it gets if it is new
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.path else self.source


class KnowledgeBase:
    """One collection of documents, searchable by meaning."""

    def __init__(
        self,
        folder: Path,
        *,
        collection: str = "default",
        settings: KnowledgeSettings,
        embed_model: BaseEmbedding,
    ):
        """Open (creating if needed) a collection.

        Args:
            folder: Where the collections' files live (MindBot passes ``kb.folder`` or
                ``DATA_DIR/kb``).
            collection: The collection (a knowledge base per persona or tenant): letters,
                digits, ``_`` and ``-``.
            settings: The knowledge-base settings.
            embed_model: The embedding model (``MiniLMEmbedding``); one per process, shared.

        Raises:
            ConfigError: The store kind or the collection name is not valid.
            StorageError: The store or the catalog cannot be opened.
        """
        self._settings = settings
        self._embed = embed_model
        self._collection = collection
        self._folder = Path(folder)
        self._lock = threading.RLock()
        self._store = open_vector_store(settings.store, self._folder, collection=collection)
        try:
            self._catalog = _Catalog(self._folder / f"{collection}.documents.db")
        except StorageError:
            _close(self._store)
            raise
        self._splitter, chunk_tokens, overlap_tokens = _make_splitter(embed_model, settings)
        fingerprint = (
            f"{_PIPELINE_VERSION}:{chunk_tokens}:{overlap_tokens}:"
            f"{getattr(embed_model, 'model_name', type(embed_model).__name__)}"
        )
        self._pipeline = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self._check_embedding_model(embed_model)
        self._max_bytes = int(settings.max_file_mb * 1024 * 1024)
        self._allowed = [Path(d).expanduser().resolve() for d in settings.allowed_dirs]

    def __str__(self) -> str:
        return f"KnowledgeBase({self._collection})"

    def _check_embedding_model(self, embed_model: BaseEmbedding) -> None:
        """Vectors of two embedding models cannot be compared: after a change of model the old
        vectors go, and each document is re-embedded at its next sync or reindex."""
        name = getattr(embed_model, "model_name", type(embed_model).__name__)
        dims = getattr(embed_model, "dimensions", None)
        model = f"{name}:{dims}" if dims else str(name)
        stored = self._catalog.meta("embedding_model")
        if stored is not None and stored != model and self._catalog.all():
            logger.warning(
                f"{self}: its documents were embedded with {stored}, and the embedding model is "
                f"now {model}: searches find nothing until they are re-embedded "
                "(`mindbot kb reindex`, or the next sync of a watched folder)"
            )
            with self._lock:
                self._store.clear()
        if stored != model:
            self._catalog.set_meta("embedding_model", model)

    @property
    def collection(self) -> str:
        """The collection's name."""
        return self._collection

    @property
    def folder(self) -> Path:
        """The folder of the collections' files."""
        return self._folder

    @property
    def settings(self) -> KnowledgeSettings:
        """The settings it was opened with."""
        return self._settings

    def close(self) -> None:
        """Close the store and the catalog."""
        with self._lock:
            _close(self._store)
            self._catalog.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- ingestion ------------------------------------------------------------------------

    def add(
        self,
        sources: Sequence[str | Path],
        *,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> IngestReport:
        """Ingest files, folders (recursively) and http(s) URLs.

        New documents are indexed, changed ones re-indexed, unchanged ones skipped by hash.

        Args:
            sources: Paths and URLs.
            progress: Called after each document with (done, total, name).

        Returns:
            What was added, updated, skipped (with reasons)...

        Raises:
            StorageError: The index cannot be written (the document at hand is not recorded).
        """
        started = time.perf_counter()
        report = IngestReport()
        with self._lock:
            items: list[_Item] = []
            for source in sources:
                items += self._expand(source, report)
            self._ingest(items, report, progress=progress, force=False)
        return self._finish(report, started, "add")

    def sync(
        self, folder: Path, *, progress: Callable[[int, int, str], None] | None = None
    ) -> IngestReport:
        """Make the knowledge base match a folder.

        New and changed files are indexed, unchanged ones skipped by hash, and the documents
        whose file under ``folder`` is gone are removed. A missing folder removes nothing.

        Args:
            folder: The folder.
            progress: As for ``add``.

        Returns:
            What changed.
        """
        started = time.perf_counter()
        report = IngestReport()
        root = Path(os.path.abspath(Path(folder).expanduser()))
        with self._lock:
            if not root.is_dir():
                report.skipped.append(SkippedSource(str(folder), "folder not found"))
                return self._finish(report, started, "sync")
            items = self._expand(root, report)
            self._ingest(items, report, progress=progress, force=False)
            for record in self._catalog.all():
                if record.path is None or not record.path.is_relative_to(root):
                    continue
                if not os.path.lexists(record.path):
                    self._delete(record)
                    report.removed.append(record.doc_id)
        return self._finish(report, started, "sync")

    def reindex(self, *, progress: Callable[[int, int, str], None] | None = None) -> IngestReport:
        """Re-read and re-embed every known document; those whose file is gone are removed.

        A URL that cannot be fetched now keeps its current passages (it is reported skipped).

        Args:
            progress: As for ``add``.

        Returns:
            What changed.
        """
        started = time.perf_counter()
        report = IngestReport()
        with self._lock:
            items: list[_Item] = []
            for record in self._catalog.all():
                if record.path is not None and not os.path.lexists(record.path):
                    self._delete(record)
                    report.removed.append(record.doc_id)
                else:
                    items.append(_Item(record.source, record.doc_id, record.path))
            self._ingest(items, report, progress=progress, force=True)
        return self._finish(report, started, "reindex")

    async def watch(self, folders: Sequence[Path], *, debounce: float = 1.0) -> None:
        """Keep the knowledge base in sync with folders until cancelled.

        Each folder is synced once the watcher runs (so nothing written meanwhile is missed),
        then again whenever something changes in it. Errors are logged, never raised: a folder
        that is missing (or a watcher that fails) is looked at again every few seconds.

        Args:
            folders: The folders (``kb.watch_dirs``).
            debounce: Seconds to wait for more changes before a sync.
        """
        warned: set[Path] = set()
        while True:
            roots = await asyncio.to_thread(self._watchable, folders, warned)
            if roots:
                try:
                    await self._watch(roots, debounce)
                except Exception as e:  # e.g. a watched folder was deleted
                    logger.error(f"{self}: watching {', '.join(map(str, roots))} stopped: {e}")
            await asyncio.sleep(_WATCH_RETRY_S)

    async def _watch(self, roots: builtins.list[Path], debounce: float) -> None:
        from watchfiles import awatch  # imported here: only a running MindBot watches

        pending: set[Path] = set(roots)  # the first sync runs once the watcher has started
        async for changes in awatch(
            *roots,
            debounce=max(1, int(debounce * 1000)),
            rust_timeout=1000,
            yield_on_timeout=True,
        ):
            for _, changed in changes:
                pending.update(r for r in roots if Path(changed).is_relative_to(r))
            while pending:
                root = pending.pop()
                try:
                    report = await asyncio.to_thread(self.sync, root)
                except Exception as e:  # a watcher must survive anything
                    logger.error(f"{self}: syncing {root} failed: {e}")
                    continue
                for skipped in report.skipped:
                    logger.warning(f"{self}: skipped {skipped.source}: {skipped.reason}")
            if not await asyncio.to_thread(lambda: all(root.is_dir() for root in roots)):
                logger.warning(f"{self}: a watched folder went away; waiting for it")
                return  # start again once it is back

    def _watchable(self, folders: Sequence[Path], warned: set[Path]) -> builtins.list[Path]:
        """The folders that exist; a missing one is logged once (until it is seen again)."""
        roots = []
        for folder in folders:
            root = Path(os.path.abspath(Path(folder).expanduser()))
            if root.is_dir():
                roots.append(root)
                warned.discard(root)
            elif root not in warned:
                warned.add(root)
                logger.warning(f"{self}: cannot watch {root}: not a folder")
        return roots

    # -- documents ------------------------------------------------------------------------

    def remove(self, doc: str) -> int:
        """Remove a document.

        A document whose file is still in a watched or synced folder comes back at the next
        sync: delete the file instead.

        Args:
            doc: Its doc id, title, file name, path or URL.

        Returns:
            How many chunks were removed.

        Raises:
            KnowledgeError: No document matches, or several do (name one by its doc id).
        """
        with self._lock:
            record = self._find(doc)
            self._delete(record)
        logger.info(f"{self}: removed {record.doc_id} ({record.chunks} chunks)")
        return record.chunks

    # -- search ---------------------------------------------------------------------------

    def search(
        self, query: str, *, top_k: int | None = None, min_score: float | None = None
    ) -> list[Passage]:
        """The passages most relevant to a query, best first.

        Args:
            query: What the caller asked.
            top_k: Passages at most; default ``kb.top_k``.
            min_score: Cosine similarity below which a passage is left out; default
                ``kb.min_score``.

        Returns:
            Up to ``top_k`` passages scoring at least ``min_score`` (none for small talk).
        """
        query = " ".join(query.split())
        if not query:
            return []
        k = top_k or self._settings.top_k
        threshold = self._settings.min_score if min_score is None else min_score
        vector = self._embed.get_query_embedding(query)
        result = self._store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k))
        passages = [
            _passage(node, score)
            for node, score in zip(result.nodes or [], result.similarities or [], strict=False)
            if score >= threshold
        ]
        logger.debug(f"{self}: {query!r} → {[f'{p.label} ({p.score:.2f})' for p in passages]}")
        return passages

    async def asearch(
        self, query: str, *, top_k: int | None = None, min_score: float | None = None
    ) -> list[Passage]:
        """``search`` on a worker thread, so the event loop is never blocked.

        Args:
            query: As for ``search``.
            top_k: As for ``search``.
            min_score: As for ``search``.

        Returns:
            As ``search`` returns.
        """
        return await asyncio.to_thread(self.search, query, top_k=top_k, min_score=min_score)

    def passages(self) -> builtins.list[Passage]:
        """Every chunk in the knowledge base as a passage (score 0), in no particular order.

        For what needs the whole text rather than a search: keyword indexes for comparison,
        and the terms a speech recognizer should expect.
        """
        with self._lock:
            nodes = self._store.get_nodes()
        return [_passage(node, 0.0) for node in nodes]

    # -- measurement ----------------------------------------------------------------------

    def evaluate(
        self,
        eval_items: Iterable[Mapping[str, Any]],
        *,
        top_k: int = 3,
        search: Callable[[str, int], Sequence[Passage]] | None = None,
    ) -> EvalResult:
        """Retrieval quality over evaluation questions (``tests/fixtures/kb/eval.yaml``).

        A hit is a passage from the expected source file whose section is the expected one
        (compared case-insensitively, whitespace and typographic quotes normalized). Searches
        apply ``kb.min_score``, as a call would.

        Args:
            eval_items: Dicts with ``id``, ``question`` and either ``source`` and ``section`` or
                ``expected: none`` (small talk: nothing should be returned).
            top_k: Passages per question.
            search: Another way to search ``(question, top_k) -> passages``, to compare a
                retrieval method with this one's (the benchmark compares hybrid retrieval);
                default: ``search``.

        Returns:
            hit@1, hit@3 (within ``top_k``), MRR, the small-talk score and every question's
            result.
        """
        results = []
        for item in eval_items:
            question = str(item["question"])
            passages = search(question, top_k) if search else self.search(question, top_k=top_k)
            source = None if item.get("expected") == "none" else item.get("source")
            section = item.get("section") if source else None
            rank = None
            if source:
                for position, passage in enumerate(passages, start=1):
                    if _source_name(passage.source) == source and _normalize(
                        passage.section
                    ) == _normalize(str(section)):
                        rank = position
                        break
            results.append(
                QuestionResult(
                    id=str(item.get("id", len(results) + 1)),
                    question=str(item["question"]),
                    expected_source=source,
                    expected_section=section,
                    rank=rank,
                    labels=tuple(p.label for p in passages),
                    scores=tuple(round(p.score, 4) for p in passages),
                )
            )
        answerable = [r for r in results if r.expected_source]
        small_talk = [r for r in results if not r.expected_source]

        def share(hits: int, total: int) -> float:
            return hits / total if total else 0.0

        return EvalResult(
            hit1=share(sum(r.rank == 1 for r in answerable), len(answerable)),
            hit3=share(
                sum(r.rank is not None and r.rank <= 3 for r in answerable), len(answerable)
            ),
            mrr=share(sum(1 / r.rank for r in answerable if r.rank), len(answerable)),
            none_correct=share(sum(not r.labels for r in small_talk), len(small_talk)),
            per_question=tuple(results),
        )

    def measure_search(self, queries: Sequence[str], *, repeat: int = 3) -> SearchSpeed:
        """Time searches (query embedding, store query, passages), after one warm-up.

        Args:
            queries: The queries.
            repeat: How many times each query is searched.

        Returns:
            The median and 95th percentile in milliseconds.
        """
        if queries:
            self.search(queries[0])
        times = []
        for _ in range(repeat):
            for query in queries:
                start = time.perf_counter()
                self.search(query)
                times.append((time.perf_counter() - start) * 1000)
        times.sort()

        def percentile(p: float) -> float:
            return times[min(len(times) - 1, math.ceil(p * len(times)) - 1)] if times else 0.0

        count = getattr(self._store, "count", None)
        chunks = count() if callable(count) else sum(d.chunks for d in self.list())
        return SearchSpeed(percentile(0.5), percentile(0.95), len(times), chunks)

    # -- internals: sources ---------------------------------------------------------------

    def _expand(self, source: str | Path, report: IngestReport) -> list[_Item]:
        """The documents a source names, recording the ones refused."""
        text = str(source).strip()
        scheme = urlsplit(text).scheme.lower() if isinstance(source, str) else ""
        if scheme in ("http", "https"):
            url = _canonical_url(text)
            return [_Item(url, url)] if url else self._skip(report, text, "not a valid URL")
        if len(scheme) > 1 and "://" in text:
            return self._skip(report, text, f"unsupported URL scheme {scheme}:")
        path = Path(os.path.abspath(Path(text).expanduser()))
        if reason := self._refusal(path):
            return self._skip(report, text, reason)
        if path.is_dir():
            return self._walk(path, report)
        if not path.exists():
            return self._skip(report, text, "not found")
        if not path.is_file():
            return self._skip(report, text, "not a regular file")
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            return self._skip(report, text, _unsupported(path))
        return [_Item(str(path), path.name, path)]

    def _walk(self, root: Path, report: IngestReport) -> list[_Item]:
        items = []
        for folder, dirs, files in os.walk(root, onerror=None, followlinks=False):
            base = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = base / name
                if reason := self._refusal(path):
                    self._skip(report, str(path), reason)
                elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
                    self._skip(report, str(path), _unsupported(path))
                elif not path.is_file():
                    self._skip(report, str(path), "not a regular file")
                else:
                    items.append(_Item(str(path), path.relative_to(root).as_posix(), path))
            for name in dirs:
                if (base / name).is_symlink():
                    self._skip(report, str(base / name), "link to a folder, not followed")
        return items

    def _refusal(self, path: Path) -> str | None:
        """Why a path may not be read (outside ``allowed_dirs``), or None."""
        if not self._allowed:
            return None
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as e:  # a symlink loop
            return f"cannot resolve the path: {e}"
        if any(real.is_relative_to(allowed) for allowed in self._allowed):
            return None
        if path.is_symlink() or real != path:
            return "refused: it leads outside the allowed folders (kb.allowed_dirs)"
        return "refused: outside the allowed folders (kb.allowed_dirs)"

    @staticmethod
    def _skip(report: IngestReport, source: str, reason: str) -> list[_Item]:
        report.skipped.append(SkippedSource(source, reason))
        logger.info(f"skipped {source}: {reason}")
        return []

    # -- internals: ingestion -------------------------------------------------------------

    def _ingest(
        self,
        items: list[_Item],
        report: IngestReport,
        *,
        progress: Callable[[int, int, str], None] | None,
        force: bool,
    ) -> None:
        unique = list({item.source: item for item in reversed(items)}.values())[::-1]
        for done, item in enumerate(unique, start=1):
            try:
                self._ingest_one(item, report, force=force)
            except StorageError:
                raise
            except Exception as e:  # one bad document must not stop the others
                logger.opt(exception=True).debug(f"{self}: {item.source} failed")
                self._skip(report, item.source, f"unexpected error: {_one_line(e)}")
            if progress is not None:
                progress(done, len(unique), item.name)

    def _ingest_one(self, item: _Item, report: IngestReport, *, force: bool) -> None:
        try:
            data, suffix = self._read(item)
        except ReadError as e:
            self._skip(report, item.source, str(e))
            return
        content_hash = hashlib.sha256(data).hexdigest()
        version = f"{content_hash[:32]}.{self._pipeline}"
        existing = self._catalog.by_source(item.source)
        if existing is not None and existing.version == version and not force:
            report.unchanged.append(existing.doc_id)
            return
        try:
            parsed = parse_document(data, suffix)
        except ReadError as e:
            self._skip(report, item.source, str(e))
            return
        doc_id = existing.doc_id if existing else self._new_doc_id(item)
        title = parsed.title or _default_title(item)
        nodes, dropped = self._chunk(parsed.sections, item, doc_id, title, content_hash, version)
        if dropped:
            report.warnings.append(
                SkippedSource(
                    item.source,
                    f"left out {dropped} passage{'s' if dropped > 1 else ''} that address the "
                    "assistant (possible prompt injection)",
                )
            )
        if not nodes:
            self._skip(report, item.source, "no text left to index")
            return
        started = time.perf_counter()
        embeddings = self._embed.get_text_embedding_batch(
            [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        )
        report.embed_seconds += time.perf_counter() - started
        for node, embedding in zip(nodes, embeddings, strict=True):
            node.embedding = embedding
        if existing is None:
            self._store.delete(doc_id)  # leftovers of an ingestion that crashed half-way
        self._store.add(nodes)
        if existing is not None:
            new_ids = {node.node_id for node in nodes}
            old_ids = [i for i in existing.node_ids() if i not in new_ids]
            if old_ids:
                self._store.delete_nodes(node_ids=old_ids)
        now = _now()
        self._catalog.put(
            _Record(
                doc_id=doc_id,
                source=item.source,
                title=title,
                content_hash=content_hash,
                version=version,
                chunks=len(nodes),
                added_at=existing.added_at if existing else now,
                updated_at=now,
            )
        )
        report.chunks += len(nodes)
        (report.updated if existing else report.added).append(doc_id)
        logger.info(f"{self}: indexed {doc_id} ({len(nodes)} chunks)")

    def _new_doc_id(self, item: _Item) -> str:
        taken = self._catalog.get(item.doc_id)
        return item.doc_id if taken is None or taken.source == item.source else item.source

    def _read(self, item: _Item) -> tuple[bytes, str]:
        """The document's bytes and the suffix of its reader."""
        if item.path is None:
            return self._fetch(item.source)
        path = item.path
        if reason := self._refusal(path):
            raise ReadError(reason)
        try:
            size = path.stat().st_size
            if size > self._max_bytes:
                raise ReadError(
                    f"too large: {size / 2**20:.1f} MB (kb.max_file_mb is "
                    f"{self._settings.max_file_mb:g})"
                )
            with path.open("rb") as f:
                data = f.read(self._max_bytes + 1)
        except FileNotFoundError:
            raise ReadError("not found") from None
        except PermissionError:
            raise ReadError("permission denied") from None
        except OSError as e:
            raise ReadError(f"cannot read: {e.strerror or e}") from None
        if len(data) > self._max_bytes:
            raise ReadError(f"too large (kb.max_file_mb is {self._settings.max_file_mb:g})")
        return data, path.suffix.lower()

    def _fetch(self, url: str) -> tuple[bytes, str]:
        """Download a URL, refusing private addresses (unless allowed) and oversized bodies."""
        limit = self._max_bytes
        try:
            with httpx.Client(
                timeout=httpx.Timeout(15.0, connect=5.0),
                follow_redirects=False,
                trust_env=False,  # a proxy would hide the address actually connected to
                headers={"User-Agent": _USER_AGENT},
            ) as client:
                for _ in range(_MAX_REDIRECTS + 1):
                    self._check_host(url)
                    with client.stream("GET", url) as response:
                        self._check_peer(response)
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            if urlsplit(url).scheme not in ("http", "https"):
                                raise ReadError("refused: redirected to a non-http URL")
                            continue
                        if response.status_code >= 400:
                            raise ReadError(
                                f"HTTP {response.status_code} {response.reason_phrase}".strip()
                            )
                        declared = response.headers.get("content-length", "")
                        if declared.isdigit() and int(declared) > limit:
                            raise ReadError(
                                f"too large: {int(declared) / 2**20:.1f} MB "
                                f"(kb.max_file_mb is {self._settings.max_file_mb:g})"
                            )
                        chunks, size = [], 0
                        for chunk in response.iter_bytes():
                            size += len(chunk)
                            if size > limit:
                                raise ReadError(
                                    f"too large (kb.max_file_mb is {self._settings.max_file_mb:g})"
                                )
                            chunks.append(chunk)
                        return b"".join(chunks), _url_suffix(url, response)
                raise ReadError(f"more than {_MAX_REDIRECTS} redirects")
        except httpx.HTTPError as e:
            raise ReadError(f"cannot download: {_one_line(e)}") from None

    def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise ReadError("not a valid URL")
        if self._settings.allow_private_urls:
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError) as e:
            raise ReadError(f"cannot resolve {host}: {_one_line(e)}") from None
        for info in infos:
            address = str(info[4][0])
            if not _is_public(address):
                raise ReadError(
                    f"refused: {host} is a private or local address ({address}); "
                    "set kb.allow_private_urls to allow it"
                )

    def _check_peer(self, response: httpx.Response) -> None:
        """Refuse a connection that ended up at a private address (DNS rebinding)."""
        if self._settings.allow_private_urls:
            return
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if peer and not _is_public(str(peer[0])):
            raise ReadError(f"refused: connected to a private or local address ({peer[0]})")

    # -- internals: chunks ----------------------------------------------------------------

    def _chunk(
        self,
        sections: list[Section],
        item: _Item,
        doc_id: str,
        title: str,
        content_hash: str,
        version: str,
    ) -> tuple[list[TextNode], int]:
        """The document's chunks, without those that look like prompt injection."""
        is_url = item.path is None
        metadata_keys = ["doc_id", "source", "file", "url", "title", "section", "topic"]
        metadata_keys += ["page", "doc_hash", "chunk"]
        documents = [
            Document(
                id_=f"{doc_id}#{number}",  # LlamaIndex maps chunks to their metadata by this id
                text=section.text,
                metadata={
                    "doc_id": doc_id,
                    "source": item.source,
                    "file": None if is_url else item.name,
                    "url": item.source if is_url else None,
                    "title": _clip(title),
                    "section": _clip(section.heading),
                    "topic": _clip(" > ".join(_below_title(section.path, title)) or title),
                    "page": section.page,
                    "doc_hash": content_hash,
                },
                excluded_embed_metadata_keys=[k for k in metadata_keys if k not in _EMBEDDED],
                excluded_llm_metadata_keys=["doc_id", "source", "file", "url", "doc_hash", "topic"],
            )
            for number, section in enumerate(sections)
        ]
        parsed = self._splitter.get_nodes_from_documents(documents)
        source = RelatedNodeInfo(node_id=doc_id)  # the store deletes by this ref_doc_id
        nodes: list[TextNode] = []
        dropped = 0
        prefix = _node_prefix(doc_id, version)
        for node in parsed:
            if not isinstance(node, TextNode) or not node.text.strip():
                continue
            if _INJECTION.search(node.text):
                dropped += 1
                continue
            node.metadata["chunk"] = len(nodes)
            node.relationships[NodeRelationship.SOURCE] = source
            node.id_ = f"{prefix}-{len(nodes)}"
            nodes.append(node)
        return nodes, dropped

    # -- internals: catalog ---------------------------------------------------------------

    def _find(self, doc: str) -> _Record:
        records = self._catalog.all()
        wanted = doc.strip()
        for matches in (
            lambda r: r.doc_id == wanted,
            lambda r: r.source == wanted or r.source == os.path.abspath(wanted),
            lambda r: _normalize(r.title) == _normalize(wanted),
            lambda r: _source_name(r.source) == wanted,
        ):
            found = [r for r in records if matches(r)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                ids = ", ".join(sorted(r.doc_id for r in found))
                raise KnowledgeError(
                    f"{doc!r} matches {len(found)} documents ({ids}); name one by its doc id"
                )
        raise KnowledgeError(
            f"No document {doc!r} in knowledge base {self._collection!r} "
            "(see `mindbot kb list` for the doc ids)"
        )

    def _delete(self, record: _Record) -> None:
        self._store.delete(record.doc_id)
        self._catalog.delete(record.doc_id)

    def _finish(self, report: IngestReport, started: float, action: str) -> IngestReport:
        report.seconds = time.perf_counter() - started
        logger.info(f"{self}: {action}: {report.summary()}")
        return report

    # Defined last: inside the class, "list" means this method from here on.
    def list(self) -> builtins.list[DocumentInfo]:
        """The documents in the knowledge base, by title."""
        with self._lock:
            records = self._catalog.all()
        return sorted(
            (record.info() for record in records), key=lambda d: (d.title.casefold(), d.doc_id)
        )


# --- The catalog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    doc_id: str
    source: str
    title: str
    content_hash: str
    version: str
    chunks: int
    added_at: str
    updated_at: str

    @property
    def path(self) -> Path | None:
        return None if _is_url(self.source) else Path(self.source)

    def node_ids(self) -> list[str]:
        prefix = _node_prefix(self.doc_id, self.version)
        return [f"{prefix}-{i}" for i in range(self.chunks)]

    def info(self) -> DocumentInfo:
        return DocumentInfo(
            doc_id=self.doc_id,
            title=self.title,
            source=self.source,
            chunks=self.chunks,
            added_at=datetime.fromisoformat(self.added_at),
            updated_at=datetime.fromisoformat(self.updated_at),
            content_hash=self.content_hash,
        )


class _Catalog:
    """The collection's documents in a small SQLite file, safe across threads and processes."""

    _COLUMNS = "doc_id, source, title, content_hash, version, chunks, added_at, updated_at"

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 5000")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _CATALOG_SCHEMA:
                raise StorageError(f"{path} was written by a newer MindBot (schema {version})")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, "
                "source TEXT NOT NULL UNIQUE, title TEXT NOT NULL, content_hash TEXT NOT NULL, "
                "version TEXT NOT NULL, chunks INTEGER NOT NULL, added_at TEXT NOT NULL, "
                "updated_at TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._conn.execute(f"PRAGMA user_version = {_CATALOG_SCHEMA}")
        except sqlite3.Error as e:
            raise StorageError(f"Cannot open the knowledge-base catalog {path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def all(self) -> list[_Record]:
        return self._select("ORDER BY doc_id")

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get(self, doc_id: str) -> _Record | None:
        found = self._select("WHERE doc_id = ?", (doc_id,))
        return found[0] if found else None

    def by_source(self, source: str) -> _Record | None:
        found = self._select("WHERE source = ?", (source,))
        return found[0] if found else None

    def put(self, record: _Record) -> None:
        self._execute(
            f"INSERT OR REPLACE INTO documents ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.doc_id,
                record.source,
                record.title,
                record.content_hash,
                record.version,
                record.chunks,
                record.added_at,
                record.updated_at,
            ),
        )

    def delete(self, doc_id: str) -> None:
        self._execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def _select(self, where: str, params: tuple = ()) -> list[_Record]:
        with self._lock:
            try:
                rows = self._conn.execute(
                    f"SELECT {self._COLUMNS} FROM documents {where}", params
                ).fetchall()
            except sqlite3.Error as e:
                raise StorageError(f"Cannot read the catalog {self.path}: {e}") from e
        return [_Record(*row) for row in rows]

    def _execute(self, sql: str, params: tuple) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, params)
            except sqlite3.Error as e:
                raise StorageError(f"Cannot write the catalog {self.path}: {e}") from e


# --- Helpers ----------------------------------------------------------------------------------

_SENTENCE = re.compile(r"[^\n]*?(?:[.!?][\"')\]]*(?:[ \t]+|$)|\n+|$)")
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}?"
    r"\b(?:previous|prior|above|earlier|preceding|all|any|your|the system)\s+"
    r"(?:\w+\s+){0,2}?(?:instructions?|prompts?|rules|directions|guidelines)\b"
    r"|\byou\s+are\s+now\s+(?:in\s+)?[\w-]+\s+mode\b"
    r"|\b(?:reveal|print|show|repeat|output)\b[^.\n]{0,30}?\b(?:system|hidden|initial)\s+prompt\b"
    r"|\bdo\s+not\s+(?:mention|tell|reveal)\b[^.\n]{0,40}?\b(?:instructed|told)\b",
    re.IGNORECASE,
)
_PUNCTUATION = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def _split_sentences(text: str) -> list[str]:
    """Sentences and lines, keeping their trailing whitespace (so they join back exactly).

    LlamaIndex's default sentence tokenizer is NLTK's punkt, whose data files NLTK refuses to
    open when the package was installed with hard links (as uv does), so a regex it is.
    """
    return [m.group(0) for m in _SENTENCE.finditer(text) if m.group(0)]


def _make_splitter(
    embed_model: BaseEmbedding, settings: KnowledgeSettings
) -> tuple[SentenceSplitter, int, int]:
    """A splitter counting the embedding model's word pieces, when its tokenizer is at hand."""
    tokenizer: Callable[[str], list] | None = None
    max_tokens = int(getattr(embed_model, "max_length", 256))
    model_dir = getattr(embed_model, "model_dir", None)
    if model_dir is not None and (Path(model_dir) / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        word_pieces = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        word_pieces.no_truncation()
        word_pieces.no_padding()
        tokenizer = lambda text: word_pieces.encode(text, add_special_tokens=False).ids  # noqa: E731
        ratio = _TOKENS_PER_WORD
    else:
        tokenizer = re.compile(r"\S+").findall
        ratio = 1.0
    chunk = min(round(settings.chunk_words * ratio), max_tokens - 2)  # [CLS] and [SEP]
    overlap = round(settings.chunk_overlap * ratio)
    splitter = SentenceSplitter(
        chunk_size=chunk,
        chunk_overlap=overlap,
        tokenizer=tokenizer,
        chunking_tokenizer_fn=_split_sentences,
        include_prev_next_rel=False,
    )
    return splitter, chunk, overlap


def _passage(node: Any, score: float) -> Passage:
    metadata = node.metadata
    page = metadata.get("page")
    return Passage(
        text=speech_text(node.get_content(metadata_mode=MetadataMode.NONE)),
        score=float(score),
        doc_id=str(metadata.get("doc_id", node.ref_doc_id or "")),
        title=str(metadata.get("title") or ""),
        section=str(metadata.get("section") or ""),
        page=int(page) if page is not None else None,
        source=str(metadata.get("source") or ""),
    )


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\"']+", re.IGNORECASE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_EMPHASIS = re.compile(r"\*\*|__|`|~~|(?<!\w)[*_](?=\w)|(?<=\w)[*_](?!\w)")
_LINE_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+\u2022\u2610\u2611]\s+|\[[ xX]\]\s+)+")


def speech_text(text: str) -> str:
    """Text fit to be read aloud: markdown symbols, table pipes and long URLs removed.

    Wrapped lines are joined back into their paragraph; a paragraph, list item or table row
    that ends without punctuation gets a full stop (so a voice pauses there); table cells are
    joined with commas; a URL is cut to its host (and a short path); whitespace is collapsed.

    Args:
        text: A chunk's text.

    Returns:
        One line of plain text.
    """
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _URL.sub(lambda m: _short_url(m.group(0)), text)
    blocks: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(" ".join(paragraph))
            paragraph.clear()

    for raw in text.splitlines():
        if not raw.strip():
            flush()
            continue
        if _TABLE_RULE.match(raw):
            continue
        starts_block = bool(_LINE_MARKUP.match(raw))
        line = _LINE_MARKUP.sub("", raw)
        is_row = "|" in line
        if is_row:
            line = ", ".join(cell.strip() for cell in line.strip().strip("|").split("|"))
        line = " ".join(_EMPHASIS.sub("", line).split())
        if not line:
            continue
        if is_row or starts_block:
            flush()
        paragraph.append(line)
        if is_row:
            flush()
    flush()
    return " ".join(
        block + "." if block[-1].isalnum() or block[-1] in ")\"'%$" else block for block in blocks
    )


def _short_url(url: str) -> str:
    trail = ""
    while url and url[-1] in ".,;:!?":
        trail, url = url[-1] + trail, url[:-1]
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = (parts.hostname or "").removeprefix("www.")
    path = parts.path.rstrip("/")
    return (host + path if len(path) <= 16 else host) + trail


def _normalize(text: str) -> str:
    """Case-folded, NFKC, typographic quotes made plain, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_PUNCTUATION)
    return " ".join(text.replace("**", "").split()).casefold()


def _below_title(path: tuple[str, ...], title: str) -> tuple[str, ...]:
    """The headings of a path under the document's title (which is often its top heading)."""
    return path[1:] if path and _normalize(path[0]) == _normalize(title) else path


def _clip(text: str, limit: int = 150) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _node_prefix(doc_id: str, version: str) -> str:
    return hashlib.sha1(f"{doc_id}\0{version}".encode()).hexdigest()[:24]


def _default_title(item: _Item) -> str:
    if item.path is not None:
        return file_title(item.path.name)
    parts = urlsplit(item.source)
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return file_title(last) if last else (parts.hostname or item.source)


def _source_name(source: str) -> str:
    """The file name of a path or URL."""
    if _is_url(source):
        return urlsplit(source).path.rstrip("/").rsplit("/", 1)[-1]
    return Path(source).name


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _canonical_url(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, ""))


def _url_suffix(url: str, response: httpx.Response) -> str:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in CONTENT_TYPES:
        suffix = CONTENT_TYPES[content_type]
        # Servers often send Markdown as text/plain.
        path_suffix = Path(urlsplit(url).path).suffix.lower()
        if suffix == ".txt" and path_suffix in SUPPORTED_SUFFIXES - {".pdf", ".docx"}:
            return path_suffix
        return suffix
    path_suffix = Path(urlsplit(url).path).suffix.lower()
    if path_suffix in SUPPORTED_SUFFIXES:
        return path_suffix
    raise ReadError(f"unsupported content type {content_type or '(none)'}")


def _is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _unsupported(path: Path) -> str:
    return f"unsupported file type {path.suffix.lower() or '(none)'}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if callable(close):
        close()


def load_eval_items(path: Path) -> list[dict[str, Any]]:
    """The questions of an evaluation file (``tests/fixtures/kb/eval.yaml``'s format).

    Args:
        path: The YAML file, with a ``questions`` list.

    Returns:
        The questions, as dicts.

    Raises:
        KnowledgeError: The file cannot be read or has no ``questions`` list.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise KnowledgeError(f"Cannot read the evaluation file {path}: {e}") from e
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list) or not all(isinstance(q, dict) for q in questions):
        raise KnowledgeError(f"{path} has no list of questions")
    return questions
