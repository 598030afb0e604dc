"""The knowledge-base benchmark: ingestion speed, retrieval quality and search time at scale.

    mindbot bench kb [--chunks 50000] [--eval tests/fixtures/kb/eval.yaml]
                     [--corpus tests/fixtures/kb/corpus]

1. Ingests the corpus into a scratch collection (chunks per second, embedding included).
2. Scores the evaluation set: hit@1, hit@3, MRR, and whether small talk retrieves nothing.
3. Compares hybrid retrieval on the same questions: BM25 keyword search (SQLite FTS5 over each
   chunk's title, section and text) fused with the vector search by reciprocal rank fusion, at a
   few weights. MindBot searches by vector only, because no weight improved hit@3 reliably
   (see BENCHMARKS.md); the comparison stays here so the decision can be re-checked when the
   corpus, the chunking or the embedding model changes.
4. Pads the collection with synthetic chunks (random unit vectors, realistic metadata and text)
   up to ``--chunks`` and times real searches (query embedding + store query), p50 and p95.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

from mindbot.kb.embeddings import EMBEDDING_DIM, MiniLMEmbedding, measure
from mindbot.kb.knowledge import KnowledgeBase, Passage, load_eval_items
from mindbot.kb.settings import KnowledgeSettings
from mindbot.kb.stores import open_vector_store

PAD_BATCH = 2000
HYBRID_WEIGHTS = (0.3, 0.5, 1.0)
"""BM25's weight against the vector search's (1.0) in reciprocal rank fusion."""
RRF_K = (10, 60)
"""Reciprocal rank fusion's constant: 60 is the usual default, 10 favours the top ranks."""
CANDIDATES = 20
STOPWORDS = frozenset(
    "a an and are at be can do does for how i if in is it me my of on or our the to we what "
    "when where which who will with you your".split()
)


@dataclass
class KnowledgeBenchResult:
    corpus_chunks: int
    ingest_chunks_per_s: float
    hit1: float
    hit3: float
    mrr: float
    small_talk_empty: str
    chunks: int
    search_p50_ms: float
    search_p95_ms: float
    searches: int
    embed_sentences_per_s: float
    embed_query_p50_ms: float
    hybrid: dict[str, list[float]] = field(default_factory=dict)
    """Method → [hit@1, hit@3, MRR] for BM25 alone and each fused weighting."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_kb_bench(
    eval_file: Path, corpus: Path, *, chunks: int = 50_000, store: str = "sqlite"
) -> KnowledgeBenchResult:
    """Run the three measurements in a scratch folder (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="mindbot-kb-bench-") as scratch:
        folder = Path(scratch)
        embedder = MiniLMEmbedding(cache_dir=folder / "models")
        settings = KnowledgeSettings(store=store)
        items = load_eval_items(eval_file)
        with KnowledgeBase(folder / "kb", settings=settings, embed_model=embedder) as kb:
            report = kb.add([corpus])
            quality = kb.evaluate(items)
            hybrid = compare_hybrid(kb, items)
            _pad(folder / "kb", store, chunks - report.chunks)
            questions = [item["question"] for item in items]
            speed = kb.measure_search(questions, repeat=3)
        embedding = measure(300, n_queries=100, cache_dir=folder / "models")
    return KnowledgeBenchResult(
        corpus_chunks=report.chunks,
        ingest_chunks_per_s=report.chunks_per_s,
        hit1=quality.hit1,
        hit3=quality.hit3,
        mrr=quality.mrr,
        small_talk_empty=f"{round(quality.none_correct * quality.small_talk)}/{quality.small_talk}",
        chunks=speed.chunks,
        search_p50_ms=speed.p50_ms,
        search_p95_ms=speed.p95_ms,
        searches=speed.searches,
        embed_sentences_per_s=embedding.sentences_per_s,
        embed_query_p50_ms=embedding.query_p50_ms,
        hybrid=hybrid,
    )


def compare_hybrid(kb: KnowledgeBase, items: list[dict[str, Any]]) -> dict[str, list[float]]:
    """hit@1, hit@3 and MRR of BM25 alone and of vector + BM25 fusions, on ``items``."""
    chunks = kb.passages()
    keywords = sqlite3.connect(":memory:")
    keywords.execute("CREATE VIRTUAL TABLE chunks USING fts5(body, tokenize='porter unicode61')")
    keywords.executemany(
        "INSERT INTO chunks(rowid, body) VALUES (?, ?)",
        [(i, f"{c.title} {c.section} {c.text}") for i, c in enumerate(chunks)],
    )

    def bm25(question: str, top_k: int) -> list[Passage]:
        words = [w for w in re.findall(r"\w+", question.lower()) if w not in STOPWORDS]
        if not words:
            return []
        rows = keywords.execute(
            "SELECT rowid FROM chunks WHERE chunks MATCH ? ORDER BY bm25(chunks) LIMIT ?",
            (" OR ".join(f'"{w}"' for w in words), top_k),
        )
        return [chunks[row] for (row,) in rows]

    def fused(weight: float, k: int):
        def search(question: str, top_k: int) -> list[Passage]:
            scores: dict[tuple[str, str], float] = {}
            found: dict[tuple[str, str], Passage] = {}
            ranked = (
                (1.0, kb.search(question, top_k=CANDIDATES)),
                (weight, bm25(question, CANDIDATES)),
            )
            for share, passages in ranked:
                for rank, passage in enumerate(passages, start=1):
                    key = (passage.doc_id, passage.text)
                    scores[key] = scores.get(key, 0.0) + share / (k + rank)
                    found.setdefault(key, passage)
            best = sorted(scores, key=scores.__getitem__, reverse=True)[:top_k]
            return [found[key] for key in best]

        return search

    methods = {"bm25 alone": bm25}
    for weight in HYBRID_WEIGHTS:
        for k in RRF_K:
            methods[f"vector + {weight} x bm25, k={k}"] = fused(weight, k)
    results = {}
    for name, search in methods.items():
        quality = kb.evaluate(items, search=search)
        results[name] = [round(quality.hit1, 3), round(quality.hit3, 3), round(quality.mrr, 3)]
    keywords.close()
    return results


def _pad(folder: Path, store: str, count: int) -> None:
    """Add ``count`` synthetic chunks (random unit vectors) to the default collection."""
    if count <= 0:
        return
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = "order shipping returns warranty store hours account payment tent boot jacket".split()
    pad = open_vector_store(store, folder, collection="default")
    try:
        for start in range(0, count, PAD_BATCH):
            nodes = []
            for n in range(start, min(count, start + PAD_BATCH)):
                doc = f"synthetic-{n // 20}"
                text = " ".join(rng.choice(words, size=80))
                node = TextNode(
                    text=text,
                    embedding=vectors[n].tolist(),
                    metadata={"doc_id": doc, "title": f"Synthetic {n // 20}", "section": "Body"},
                )
                node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
                nodes.append(node)
            pad.add(nodes)
    finally:
        close = getattr(pad, "close", None)
        if callable(close):
            close()


def format_kb_summary(result: KnowledgeBenchResult) -> str:
    r = result
    return (
        f"ingestion: {r.corpus_chunks} corpus chunks at {r.ingest_chunks_per_s:.0f} chunks/s "
        f"(embedding {r.embed_sentences_per_s:.0f} sentences/s, "
        f"query {r.embed_query_p50_ms:.1f} ms)\n"
        f"retrieval quality: hit@1 {r.hit1:.3f}, hit@3 {r.hit3:.3f}, MRR {r.mrr:.3f}; "
        f"small talk retrieving nothing {r.small_talk_empty}\n"
        f"search at {r.chunks:,} chunks: p50 {r.search_p50_ms:.1f} ms, "
        f"p95 {r.search_p95_ms:.1f} ms ({r.searches} searches)"
        + "".join(
            f"\nhybrid, {name}: hit@1 {h1:.3f}, hit@3 {h3:.3f}, MRR {mrr:.3f}"
            for name, (h1, h3, mrr) in r.hybrid.items()
        )
    )
