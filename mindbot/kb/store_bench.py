"""The vector-store benchmark: which embedded store serves knowledge-base retrieval fastest.

Each candidate store gets the same synthetic corpus: ``n_chunks`` chunks of ~500 characters with
the metadata an ingested document gives them (``kb`` tenant, ``doc_id``, ``file``, ``title``,
``section``, ``page``), 25 chunks a document, four tenants, and random unit embeddings. For
each store, in a fresh process:

1. add every chunk, in batches of 1,000;
2. query top-5 by cosine, ``queries`` times each, with random unit vectors, with vectors near
   stored ones (a stored vector plus noise), and filtered to one tenant (``kb``), giving p50 and
   p95 latencies and the recall against an exact numpy search;
3. delete 20 documents by ``ref_doc_id`` (time each; check that exactly their chunks went and
   that none of them is returned any more);
4. update a document (delete it and add new versions of its chunks);
5. close it, and in another new process reopen it and check that the same queries give the same
   results (and how long opening takes, and the memory it holds).

The stores: ``sqlite`` and ``duckdb`` through ``mindbot.kb.stores.open_vector_store``;
``simple``, LlamaIndex's ``SimpleVectorStore`` persisted to JSON (its queries are capped at
``slow_queries``: each one takes seconds); ``lancedb``, LanceDB itself (its LlamaIndex
integration cannot be imported without pandas), storing rows as that integration would.

    python -m mindbot.kb.store_bench [--chunks 50000] [--queries 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

STORES = ("sqlite", "duckdb", "simple", "lancedb")
CHUNKS_PER_DOC = 25
TENANTS = ("kb0", "kb1", "kb2", "kb3")
BATCH = 1000
TOP_K = 5
DELETED_DOCS = 20
PROBES = 20
_SEED = 20250101
_WORDS = (
    "the call center warranty invoice refund battery charger install reset router password "
    "account billing schedule appointment delivery order return policy support manual device "
    "firmware update network wireless signal cable power outlet screen display volume speaker "
    "microphone headset bluetooth pairing app settings privacy security contract plan upgrade "
    "downgrade cancel renew payment card bank transfer receipt customer service hours holiday "
    "weekend office address parking floor room meeting agent transfer escalate ticket"
).split()


@dataclass
class Corpus:
    """A deterministic synthetic corpus: unit embeddings and the chunks' metadata."""

    embeddings: np.ndarray  # (n, dim) float32, unit rows
    doc_of: np.ndarray  # (n,) document index of each chunk
    kb_of_doc: np.ndarray  # (docs,) tenant index of each document

    @property
    def size(self) -> int:
        """How many chunks the corpus holds."""
        return len(self.doc_of)

    def node(self, row: int, *, embedding: np.ndarray | None = None, version: int = 1) -> TextNode:
        """Chunk ``row`` as a LlamaIndex node, as ingestion would make it."""
        doc = int(self.doc_of[row])
        part = row % CHUNKS_PER_DOC
        rng = np.random.default_rng(row)
        text = " ".join(rng.choice(_WORDS, 90))[:500]
        node_id = f"doc{doc:05d}-c{part:02d}" + ("" if version == 1 else f"-v{version}")
        vector = self.embeddings[row] if embedding is None else embedding
        return TextNode(
            id_=node_id,
            text=text,
            embedding=vector.tolist(),
            metadata={
                "kb": TENANTS[int(self.kb_of_doc[doc])],
                "doc_id": doc_id(doc),
                "file": f"manuals/product-{doc:05d}.pdf",
                "title": f"Product {doc} user manual",
                "section": f"{part // 5 + 1}. Troubleshooting",
                "page": part // 2 + 1,
            },
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id(doc))},
        )


def doc_id(doc: int) -> str:
    """The ``ref_doc_id`` of document number ``doc``."""
    return f"doc{doc:05d}"


def make_corpus(n_chunks: int, dim: int) -> Corpus:
    """The benchmark's corpus, the same for every store and process."""
    rng = np.random.default_rng(_SEED)
    embeddings = _unit(rng.normal(size=(n_chunks, dim)).astype(np.float32))
    doc_of = np.arange(n_chunks) // CHUNKS_PER_DOC
    kb_of_doc = np.arange(int(doc_of[-1]) + 1) % len(TENANTS)
    return Corpus(embeddings=embeddings, doc_of=doc_of, kb_of_doc=kb_of_doc)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


# -- adapters: one small interface over every candidate ------------------------------------


class _Adapter(ABC):
    """What the benchmark does to a store; ``query`` returns ids, best first."""

    @abstractmethod
    def add(self, nodes: list[TextNode]) -> None: ...

    @abstractmethod
    def query(self, vector: np.ndarray, kb: str | None = None) -> list[str]: ...

    @abstractmethod
    def delete_doc(self, ref_doc_id: str) -> None: ...

    @abstractmethod
    def count(self) -> int: ...

    def persist(self) -> None:  # noqa: B027 (a hook: most stores need no explicit step)
        """Make the writes durable (only stores that need an explicit step)."""

    def close(self) -> None:  # noqa: B027 (a hook: most stores hold nothing to release)
        """Release the store."""


class _LlamaIndexAdapter(_Adapter):
    def __init__(self, kind: str, folder: Path):
        from mindbot.kb.stores import open_vector_store

        self.kind = kind
        self.store: Any = open_vector_store(kind, folder)

    def add(self, nodes: list[TextNode]) -> None:
        self.store.add(nodes)

    def query(self, vector: np.ndarray, kb: str | None = None) -> list[str]:
        filters = _kb_filter(kb)
        result = self.store.query(
            VectorStoreQuery(
                query_embedding=vector.tolist(), similarity_top_k=TOP_K, filters=filters
            )
        )
        assert result.nodes is not None and all(n.get_content() for n in result.nodes)
        return list(result.ids or [])

    def delete_doc(self, ref_doc_id: str) -> None:
        self.store.delete(ref_doc_id)

    def count(self) -> int:
        if self.kind == "duckdb":
            return self.store.client.execute("SELECT count(*) FROM documents").fetchone()[0]
        return self.store.count()

    def close(self) -> None:
        self.store.close()


class _SimpleAdapter(_Adapter):
    def __init__(self, folder: Path):
        from llama_index.core.vector_stores import SimpleVectorStore

        self.path = folder / "default__vector_store.json"
        if self.path.exists():
            self.store = SimpleVectorStore.from_persist_path(str(self.path))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.store = SimpleVectorStore()

    def add(self, nodes: list[TextNode]) -> None:
        self.store.add(nodes)

    def query(self, vector: np.ndarray, kb: str | None = None) -> list[str]:
        filters = _kb_filter(kb)
        result = self.store.query(
            VectorStoreQuery(
                query_embedding=vector.tolist(), similarity_top_k=TOP_K, filters=filters
            )
        )
        return list(result.ids or [])

    def delete_doc(self, ref_doc_id: str) -> None:
        self.store.delete(ref_doc_id)

    def count(self) -> int:
        return len(self.store.data.embedding_dict)

    def persist(self) -> None:
        self.store.persist(str(self.path))


class _LanceAdapter(_Adapter):
    """LanceDB, with the rows ``LanceDBVectorStore`` writes and the nodes it rebuilds."""

    def __init__(self, folder: Path):
        import lancedb

        self.db = lancedb.connect(str(folder))
        exists = "vectors" in self.db.table_names()
        self.table: Any = self.db.open_table("vectors") if exists else None

    def add(self, nodes: list[TextNode]) -> None:
        from llama_index.core.vector_stores.utils import node_to_metadata_dict

        rows = [
            {
                "id": node.node_id,
                "doc_id": node.ref_doc_id,
                "vector": node.get_embedding(),
                "text": node.get_content(metadata_mode=MetadataMode.NONE),
                "metadata": node_to_metadata_dict(node, remove_text=False, flat_metadata=True),
            }
            for node in nodes
        ]
        if self.table is None:
            self.table = self.db.create_table("vectors", rows)
        else:
            self.table.add(rows)

    def query(self, vector: np.ndarray, kb: str | None = None) -> list[str]:
        from llama_index.core.vector_stores.utils import metadata_dict_to_node

        search = self.table.search(vector.tolist()).metric("cosine").limit(TOP_K)
        if kb is not None:
            search = search.where(f"metadata.kb = '{kb}'")
        rows = search.to_arrow().to_pylist()
        for row in rows:
            metadata_dict_to_node(row["metadata"])
        return [row["id"] for row in rows]

    def delete_doc(self, ref_doc_id: str) -> None:
        self.table.delete(f"doc_id = '{ref_doc_id}'")

    def count(self) -> int:
        return self.table.count_rows()


def _kb_filter(kb: str | None) -> MetadataFilters | None:
    return None if kb is None else MetadataFilters(filters=[MetadataFilter(key="kb", value=kb)])


def _adapter(kind: str, folder: Path) -> _Adapter:
    if kind in ("sqlite", "duckdb"):
        return _LlamaIndexAdapter(kind, folder)
    if kind == "simple":
        return _SimpleAdapter(folder)
    if kind == "lancedb":
        return _LanceAdapter(folder)
    raise ValueError(f"unknown store {kind!r}")


# -- the measurements ------------------------------------------------------------------------


def _timed(calls: list[Callable[[], list[str]]]) -> tuple[list[float], list[list[str]]]:
    """Milliseconds of each call, and what each returned."""
    millis, results = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(call())
        millis.append((time.perf_counter() - started) * 1000)
    return millis, results


def _percentiles(millis: list[float]) -> dict[str, float]:
    ordered = sorted(millis)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
    }


def _exact(matrix: np.ndarray, ids: list[str], vector: np.ndarray, rows: np.ndarray) -> set[str]:
    scores = matrix[rows] @ vector
    return {ids[rows[i]] for i in np.argsort(-scores)[:TOP_K]}


def _recall(results: list[list[str]], truths: list[set[str]]) -> float:
    found = sum(len(set(r) & t) for r, t in zip(results, truths, strict=True))
    return round(found / (TOP_K * len(truths)), 4)


def _disk_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6, 1)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _probes(corpus: Corpus, count: int) -> np.ndarray:
    rng = np.random.default_rng(_SEED + 7)
    return _unit(rng.normal(size=(count, corpus.embeddings.shape[1])).astype(np.float32))


def _build_and_measure(
    kind: str, n_chunks: int, dim: int, queries: int, folder: str
) -> dict[str, Any]:
    """Phases 1-4 in this (fresh) process; returns the figures and the probes' results."""
    corpus = make_corpus(n_chunks, dim)
    nodes = [corpus.node(row) for row in range(corpus.size)]
    node_ids = [node.node_id for node in nodes]
    store_folder = Path(folder)
    result: dict[str, Any] = {"store": kind, "chunks": n_chunks, "dim": dim, "queries": queries}

    started = time.perf_counter()
    store = _adapter(kind, store_folder)
    for start in range(0, len(nodes), BATCH):
        store.add(nodes[start : start + BATCH])
    result["add_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    store.persist()
    result["persist_s"] = round(time.perf_counter() - started, 2)
    result["count_after_add"] = store.count()

    rng = np.random.default_rng(_SEED + 1)
    randoms = _unit(rng.normal(size=(queries, dim)).astype(np.float32))
    sources = rng.choice(corpus.size, size=queries, replace=False)
    nears = _unit(corpus.embeddings[sources] + rng.normal(scale=0.03, size=(queries, dim)))
    everything = np.arange(corpus.size)
    tenant_rows = np.flatnonzero(corpus.kb_of_doc[corpus.doc_of] == 1)
    for vector in randoms[:5]:  # warm up caches and lazy loads
        store.query(vector)
        store.query(vector, TENANTS[1])

    millis, found = _timed([lambda v=v: store.query(v) for v in randoms])
    truths = [_exact(corpus.embeddings, node_ids, v, everything) for v in randoms]
    result["random"] = {**_percentiles(millis), "recall_at_5": _recall(found, truths)}

    millis, found = _timed([lambda v=v: store.query(v) for v in nears])
    hits = sum(bool(ids) and ids[0] == node_ids[s] for ids, s in zip(found, sources, strict=True))
    result["near"] = {**_percentiles(millis), "top1_is_source": round(hits / queries, 4)}

    millis, found = _timed([lambda v=v: store.query(v, TENANTS[1]) for v in randoms])
    truths = [_exact(corpus.embeddings, node_ids, v, tenant_rows) for v in randoms]
    in_tenant = set(node_ids[row] for row in tenant_rows)
    result["filtered_kb"] = {
        **_percentiles(millis),
        "recall_at_5": _recall(found, truths),
        "only_that_kb": all(set(ids) <= in_tenant for ids in found),
    }

    # Delete 20 documents, one at a time.
    docs = corpus.doc_of[-1] + 1
    deleted = [int(d) for d in np.linspace(1, docs - 2, DELETED_DOCS).astype(int)]
    millis = []
    for doc in deleted:
        started = time.perf_counter()
        store.delete_doc(doc_id(doc))
        millis.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    store.persist()
    persist_after_delete = time.perf_counter() - started
    gone = {node_ids[row] for row in range(corpus.size) if corpus.doc_of[row] in deleted}
    returned = set()
    for doc in deleted:
        returned |= set(store.query(corpus.embeddings[doc * CHUNKS_PER_DOC]))
    expected_count = corpus.size - DELETED_DOCS * CHUNKS_PER_DOC
    result["delete_doc"] = {
        **_percentiles(millis),
        "persist_s": round(persist_after_delete, 2),
        "count_ok": store.count() == expected_count,
        "deleted_never_returned": not (returned & gone),
    }

    # Update document 0: delete it, add new versions of its chunks with new embeddings.
    fresh = _unit(rng.normal(size=(CHUNKS_PER_DOC, dim)).astype(np.float32))
    updated = [corpus.node(row, embedding=fresh[row], version=2) for row in range(CHUNKS_PER_DOC)]
    started = time.perf_counter()
    store.delete_doc(doc_id(0))
    store.add(updated)
    store.persist()
    update_ms = (time.perf_counter() - started) * 1000
    top = store.query(fresh[3])
    old = store.query(corpus.embeddings[3])
    result["update_doc"] = {
        "ms": round(update_ms, 1),
        "new_version_found": bool(top) and top[0] == updated[3].node_id,
        "old_version_gone": node_ids[3] not in old,
        "count_ok": store.count() == expected_count,
    }

    probes = _probes(corpus, PROBES)
    result["probe_ids"] = [store.query(v) for v in probes]
    result["probe_ids_kb"] = [store.query(v, TENANTS[2]) for v in probes]
    result["rss_mb_loaded"] = _rss_mb()
    store.close()
    result["disk_mb"] = _disk_mb(store_folder)
    return result


def _reopen_and_check(
    kind: str, n_chunks: int, dim: int, queries: int, folder: str
) -> dict[str, Any]:
    """Phase 5, in another fresh process: reopen the store and query it.

    The probe queries check that the results did not change; then queries are timed as a server
    would see them (no corpus held in this process).
    """
    probes = _probes(make_corpus(min(n_chunks, 100), dim), PROBES)
    rss_before = _rss_mb()
    started = time.perf_counter()
    store = _adapter(kind, Path(folder))
    opened = time.perf_counter() - started
    started = time.perf_counter()
    first = store.query(probes[0])
    first_ms = (time.perf_counter() - started) * 1000
    ids = [first] + [store.query(v) for v in probes[1:]]
    ids_kb = [store.query(v, TENANTS[2]) for v in probes]
    rss_after = _rss_mb()
    randoms = _unit(np.random.default_rng(_SEED + 11).normal(size=(queries, dim)))
    served, _ = _timed([lambda v=v: store.query(v) for v in randoms])
    served_kb, _ = _timed([lambda v=v: store.query(v, TENANTS[3]) for v in randoms])
    store.close()
    return {
        "open_s": round(opened, 3),
        "first_query_ms": round(first_ms, 1),
        "probe_ids": ids,
        "probe_ids_kb": ids_kb,
        "rss_mb_added": round(rss_after - rss_before, 1),
        "served": _percentiles(served),
        "served_kb": _percentiles(served_kb),
    }


def _in_new_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def compare_stores(
    n_chunks: int = 50_000,
    dim: int = 384,
    queries: int = 200,
    folder: Path | None = None,
    *,
    stores: tuple[str, ...] = STORES,
    slow_queries: int = 20,
) -> dict[str, dict[str, Any]]:
    """Measure each candidate store on the same corpus; each phase runs in a fresh process.

    Args:
        n_chunks: How many chunks the corpus holds (a multiple of 25 keeps documents whole).
        dim: The embeddings' dimension.
        queries: How many queries of each kind (random, near, filtered).
        folder: Where the stores' files go (one subfolder per store, replaced); None for a
            temporary folder, removed afterwards.
        stores: Which of ``STORES`` to measure.
        slow_queries: The number of queries for ``simple``, whose queries take seconds.

    Returns:
        Per store: ``add_s``, ``random``/``near``/``filtered_kb`` (``p50_ms``, ``p95_ms``,
        recall), ``delete_doc``, ``update_doc``, ``reopen`` (``open_s``, ``same_results``),
        ``disk_mb``, ``rss_mb_loaded``; or ``error`` when the store could not be measured.
    """
    root = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="store-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in stores:
            where = root / kind
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir(parents=True)
            count = min(queries, slow_queries) if kind == "simple" else queries
            try:
                built = _in_new_process(_build_and_measure, kind, n_chunks, dim, count, str(where))
                reopened = _in_new_process(
                    _reopen_and_check, kind, n_chunks, dim, count, str(where)
                )
            except Exception as e:  # a store that fails is a result, not the end of the run
                results[kind] = {"store": kind, "error": f"{type(e).__name__}: {e}"}
                continue
            built["reopen"] = {
                "open_s": reopened["open_s"],
                "first_query_ms": reopened["first_query_ms"],
                "same_results": reopened["probe_ids"] == built["probe_ids"]
                and reopened["probe_ids_kb"] == built["probe_ids_kb"],
                "rss_mb_added": reopened["rss_mb_added"],
                "served": reopened["served"],
                "served_kb": reopened["served_kb"],
            }
            del built["probe_ids"], built["probe_ids_kb"]
            results[kind] = built
    finally:
        if folder is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a Markdown table, one store a row; latencies are p50 / p95 in ms."""

    def pair(figures: dict[str, float]) -> str:
        return f"{figures['p50_ms']:.1f} / {figures['p95_ms']:.1f}"

    lines = [
        "| store | add s | query | near | kb filter | served | served kb | recall@5 "
        "| delete doc ms | delete ok | update ms | open s | same after reopen | disk MB "
        "| RAM MB |",
        "|---" * 15 + "|",
    ]
    for kind, r in results.items():
        if "error" in r:
            lines.append(f"| {kind} | error: {r['error']} |" + " |" * 13)
            continue
        delete, reopen = r["delete_doc"], r["reopen"]
        ok = delete["count_ok"] and delete["deleted_never_returned"]
        ok = ok and all(r["update_doc"][key] for key in ("new_version_found", "old_version_gone"))
        cells = [
            kind,
            f"{r['add_s']:.1f}",
            pair(r["random"]),
            pair(r["near"]),
            pair(r["filtered_kb"]),
            pair(reopen["served"]),
            pair(reopen["served_kb"]),
            f"{min(r['random']['recall_at_5'], r['filtered_kb']['recall_at_5']):.3f}",
            f"{delete['p50_ms']:.1f}",
            str(ok),
            f"{r['update_doc']['ms']:.0f}",
            f"{reopen['open_s']:.2f}",
            str(reopen["same_results"]),
            f"{r['disk_mb']:.0f}",
            f"{reopen['rss_mb_added']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table (and write the JSON, if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = compare_stores(
        args.chunks, args.dim, args.queries, args.folder, stores=tuple(args.stores)
    )
    print(f"{args.chunks} chunks × {args.dim} dims, top-{TOP_K}, {os.cpu_count()} CPUs")
    print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
