"""The knowledge base's vector store: embedded, persistent, behind LlamaIndex's abstraction.

``open_vector_store(kind, folder, collection=...)`` returns a LlamaIndex
``BasePydanticVectorStore``; ``kind`` is a setting:

- ``"sqlite"`` (the default, no extra dependency): ``SQLiteVectorStore`` below. Nodes, text,
  metadata and float32 embeddings live in one SQLite file per collection,
  ``folder/<collection>.sqlite``; the embeddings are also held in a numpy matrix, loaded when the
  store opens and kept in sync on every add and delete, and a query is one matrix-vector
  product (exact cosine, brute force).
- ``"duckdb"`` (optional group ``kb-candidates``): LlamaIndex's ``DuckDBVectorStore`` in
  ``folder/<collection>.duckdb``, made to open offline (see ``_duckdb_store_class``).

Why SQLite + numpy, measured with ``python -m mindbot.kb.store_bench --chunks 50000 --queries
200`` (``mindbot.kb.store_bench.compare_stores``): 50,000 chunks of ~500 characters with the
metadata ingestion gives them (kb, doc id, file, title, section, page), 384-dimension random unit
embeddings, added in batches of 1,000; 200 top-5 cosine queries of each kind; this 2-core AMD
EPYC machine, 23 GiB RAM, Python 3.11. Latencies are p50 / p95 in ms::

    store          add 50k  query        kb filter    served       delete doc  update  reopen
    sqlite (ours)    3.0 s  2.6 / 2.7    2.8 / 3.2    2.5 / 2.6       0.3 ms    2 ms  0.44 s
    duckdb           5.8 s  74 / 80      85 / 91      79 / 82        26.5 ms   35 ms  0.19 s
    simple (JSON)    1.2 s  419 / 578    169 / 183    423 / 651       2.0 ms  38.7 s    76 s
    lancedb (raw)    3.7 s  16.5 / 18.8  25.6 / 34.6  18.3 / 20.6     5.0 ms   15 ms  0.97 s

    disk and RAM of a reopened store: sqlite 207 MB / 107 MB, duckdb 176 / 186, simple 432 /
    940, lancedb 107 / 278. "served": queries in a fresh process that opened the store, as a
    server would. Every store was exact (recall@5 1.0 against numpy, near-duplicate queries
    found their source), deleted exactly the document's 25 chunks, and gave the same results
    after a reopen in a new process.

- Only SQLite + numpy meets the target (p95 under 20 ms at 50k chunks), by a factor of seven;
  its search is exact brute force, one pass over a 77 MB matrix.
- DuckDB's LlamaIndex store takes 74-98 ms a query, 28 ms already at 1,000 chunks: each query
  is turned into SQL text holding the whole vector and executed, scanning the table (and
  parsing the JSON metadata for a filter). It also runs ``INSTALL json`` and ``INSTALL fts``
  whenever it opens, which download extensions: offline that fails, so the ``duckdb`` kind
  below replaces its table set-up. A DuckDB file is locked by the one process that opens it.
- LlamaIndex's ``SimpleVectorStore`` rebuilds a numpy array from Python lists on every query,
  persists only by rewriting the whole store as JSON (38 s at 50k, after every change), takes
  76 s and 940 MB to load, and keeps no text (it needs a separate docstore). Not a candidate.
- LanceDB's LlamaIndex integration (0.6.0) cannot be used here: it imports ``pandas``, which it
  does not declare (and which is not installed), and its ``delete(ref_doc_id)`` puts the id in
  double quotes, which Lance reads as a column name, so deleting a document fails. LanceDB
  itself, measured directly, is near the target but not under it (p95 19-23 ms, 35-37 ms with
  a filter) and weighs 560 MB installed (lancedb, pylance, pyarrow), before pandas.
- Install weight: SQLite + numpy adds nothing (sqlite3 is in the standard library; numpy and
  sqlite-utils are already MindBot dependencies). DuckDB adds 62 MB plus pyarrow's 165 MB.

The search uses ``np.einsum`` rather than ``matrix @ vector``: the same sums on one thread.
OpenBLAS splits ``matrix @ vector`` over both cores, and in this store (queries with other work
between them) that took 7.8 / 10.3 ms instead of 2.5 / 3.3 ms on one thread, besides taking the
core that speech recognition and synthesis need.

A knowledge base per persona or tenant is a separate collection: a separate file with its own
matrix, so one tenant's query never scans, nor can return, another tenant's chunks, and a tenant
goes with its file. Metadata filters (``MetadataFilters``, evaluated by LlamaIndex's own filter
function) also work, e.g. to narrow to one document: the first query with a new filter loads
the values of its keys and builds a mask (150 ms at 50k), later ones cost nothing extra, and
writes keep the masks up to date.

Memory: 4 bytes per dimension per chunk (77 MB at 50k × 384) plus the ids; opening a collection
reads its embeddings (0.25-0.45 s at 50k with the file in the page cache, about 2.7 s from a
cold disk). One process writes a collection at a time; another process that has it open sees
the change (SQLite's ``PRAGMA data_version``) and reloads before its next operation. A file
that is unreadable, corrupt or not a vector store raises ``StorageError`` naming the file, and
is left as it was.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import (
    build_metadata_filter_fn,
    metadata_dict_to_node,
    node_to_metadata_dict,
)
from loguru import logger
from sqlite_utils import Database

from mindbot.errors import ConfigError, StorageError

StoreKind = Literal["sqlite", "duckdb"]
STORE_KINDS: tuple[str, ...] = get_args(StoreKind)
DEFAULT_STORE_KIND: StoreKind = "sqlite"

_COLLECTION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 5000
_CACHED_MASKS = 16


def open_vector_store(
    kind: str, folder: Path, *, collection: str = "default"
) -> BasePydanticVectorStore:
    """Open (creating if needed) one collection of the knowledge base's vector store.

    Args:
        kind: ``"sqlite"`` (the default, no extra dependency) or ``"duckdb"`` (needs
            ``llama-index-vector-stores-duckdb``).
        folder: The folder that holds the store's files; created if missing.
        collection: The collection's name (a knowledge base per persona or tenant), letters,
            digits, ``_`` and ``-``; each collection is a separate file.

    Returns:
        A LlamaIndex vector store with text, flat metadata, delete by ``ref_doc_id`` and
        metadata filters. Call its ``close()`` when done.

    Raises:
        ConfigError: ``kind`` or ``collection`` is not valid, or the kind's package is missing.
        StorageError: The store's file cannot be read or is not a vector store.
    """
    if kind not in STORE_KINDS:
        raise ConfigError(
            f"Unknown vector store kind {kind!r}: choose one of {', '.join(STORE_KINDS)}"
        )
    if not _COLLECTION_RE.fullmatch(collection):
        raise ConfigError(
            f"Knowledge-base collection {collection!r} is not valid: use 1-64 letters, digits, "
            "'_' or '-', starting with a letter or digit"
        )
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"Cannot create the vector store folder {folder}: {e}") from e
    if kind == "duckdb":
        return _open_duckdb(folder / f"{collection}.duckdb")
    return SQLiteVectorStore(path=folder / f"{collection}.sqlite")


class SQLiteVectorStore(BasePydanticVectorStore):
    """Nodes in SQLite, their embeddings in a numpy matrix; exact cosine search.

    The file holds one table, ``nodes(node_id, ref_doc_id, text, metadata, embedding)``, the
    metadata being LlamaIndex's flat metadata dict (with the serialized node) as JSON and the
    embedding float32 bytes. Every write goes to SQLite first, in one transaction, and then to
    the in-memory index, so the two agree. Safe to share between threads; ``aquery`` runs the
    search on a worker thread so that the event loop is never blocked.
    """

    stores_text: bool = True
    flat_metadata: bool = True
    path: str

    _conn: sqlite3.Connection = PrivateAttr()
    _db: Database = PrivateAttr()
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _data_version: int = PrivateAttr(default=0)
    _index: _MatrixIndex = PrivateAttr()

    def __init__(self, *, path: Path | str) -> None:
        """Open the store's file, creating it if missing, and load its embeddings.

        Args:
            path: The SQLite file of one collection.

        Raises:
            StorageError: The file cannot be read or holds something else than a vector store.
        """
        super().__init__(path=str(path))
        self._open()

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this store under."""
        return "SQLiteVectorStore"

    @property
    def client(self) -> Database:
        """The sqlite-utils database of this collection."""
        return self._db

    def count(self) -> int:
        """How many nodes the store holds."""
        with self._lock:
            self._sync()
            return self._index.size

    def __str__(self) -> str:
        """The store as it appears in logs."""
        return f"SQLiteVectorStore({Path(self.path).name})"

    # -- writes ---------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add nodes, or replace those whose ``node_id`` is already stored.

        Args:
            nodes: Nodes with embeddings and flat metadata (str, int, float or None values).
            **add_kwargs: Ignored.

        Returns:
            The nodes' ids, in order.

        Raises:
            ValueError: A node has no embedding, non-flat metadata, or an embedding whose
                dimension differs from the nodes' already stored.
        """
        if not nodes:
            return []
        embeddings = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] == 0:
            raise ValueError(f"{self}: every node needs an embedding of the same dimension")
        metadata = [
            node_to_metadata_dict(node, remove_text=True, flat_metadata=True) for node in nodes
        ]
        rows = [
            (
                node.node_id,
                node.ref_doc_id,
                node.get_content(metadata_mode=MetadataMode.NONE),
                json.dumps(meta, ensure_ascii=False),
                vector.tobytes(),
            )
            for node, meta, vector in zip(nodes, metadata, embeddings, strict=True)
        ]
        dim = embeddings.shape[1]
        with self._lock:
            self._sync()
            if self._index.size == 0:  # an empty store takes any dimension (a new model)
                self._index = _MatrixIndex(dim)
            elif dim != self._index.dim:
                raise ValueError(
                    f"{self}: embeddings have {dim} dimensions, the store holds {self._index.dim}"
                )

            def insert(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES ('dim', ?)", (str(dim),)
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO nodes "
                    "(node_id, ref_doc_id, text, metadata, embedding) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )

            self._write(insert)
            self._index.put([row[0] for row in rows], embeddings, lambda: metadata)
        logger.debug(f"{self}: added {len(nodes)} nodes")
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of one document.

        Args:
            ref_doc_id: The id of the document whose nodes go.
            **delete_kwargs: Ignored.
        """
        with self._lock:
            self._sync()
            found = self._read("SELECT node_id FROM nodes WHERE ref_doc_id = ?", (ref_doc_id,))
            self._remove([node_id for (node_id,) in found])

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes that are in ``node_ids`` and match ``filters`` (all, if neither).

        Args:
            node_ids: The nodes to consider; None for every node.
            filters: Metadata filters the deleted nodes match; None for no condition.
            **delete_kwargs: Ignored.
        """
        with self._lock:
            self._sync()
            self._remove(self._select(node_ids, filters))

    def clear(self) -> None:
        """Delete every node (the next nodes added may have another dimension)."""
        with self._lock:
            self._sync()
            self._remove(list(self._index.ids))

    # -- reads ----------------------------------------------------------------------------

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest to the query embedding, by cosine similarity.

        ``filters``, ``doc_ids`` and ``node_ids`` (when not empty) restrict the candidates.
        Only the default (dense) mode exists.

        Args:
            query: The query; ``query_embedding`` is required.
            **kwargs: Ignored.

        Returns:
            Nodes (with text and metadata), their cosine similarities and ids, best first.

        Raises:
            ValueError: No query embedding, a mode other than the default, or a dimension that
                differs from the store's.
        """
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(f"{self}: query mode {query.mode!s} is not supported")
        if query.query_embedding is None:
            raise ValueError(f"{self}: a query needs a query_embedding")
        vector = np.asarray(query.query_embedding, dtype=np.float32)
        with self._lock:
            self._sync()
            index = self._index
            if index.size == 0 or query.similarity_top_k <= 0:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            if vector.shape != (index.dim,):
                raise ValueError(
                    f"{self}: the query has {vector.shape[0]} dimensions, "
                    f"the store holds {index.dim}"
                )
            ids, similarities = index.search(vector, query.similarity_top_k, self._mask(query))
            nodes = self._nodes(ids)
        return VectorStoreQueryResult(nodes=nodes, similarities=similarities, ids=ids)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """``query`` on a worker thread.

        Args:
            query: As for ``query``.
            **kwargs: Ignored.

        Returns:
            As ``query`` returns.
        """
        return await asyncio.to_thread(self.query, query, **kwargs)

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """``add`` on a worker thread."""
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """``delete`` on a worker thread."""
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """``delete_nodes`` on a worker thread."""
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """``get_nodes`` on a worker thread."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aclear(self) -> None:
        """``clear`` on a worker thread."""
        await asyncio.to_thread(self.clear)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The nodes that are in ``node_ids`` and match ``filters`` (all, if neither).

        Args:
            node_ids: The nodes to return; None for every node.
            filters: Metadata filters the returned nodes match; None for no condition.

        Returns:
            The nodes, with text, metadata and embedding.
        """
        with self._lock:
            self._sync()
            nodes = self._nodes(self._select(node_ids, filters), with_embeddings=True)
        return nodes

    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Nothing to do: every write is already on disk.

        Args:
            persist_path: Ignored.
            fs: Ignored.
        """

    def close(self) -> None:
        """Close the file; the store cannot be used afterwards."""
        with self._lock:
            self._conn.close()
            self._index = _MatrixIndex(0)

    # -- internals ------------------------------------------------------------------------

    def _open(self) -> None:
        started = time.perf_counter()
        path = Path(self.path)
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise StorageError(f"Cannot open the vector store {path}: {e}") from e
        try:
            self._db = Database(self._conn)
            # Read before writing anything, so that a foreign or corrupt file stays untouched.
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = set(self._db.table_names())
            if version > _SCHEMA_VERSION:
                raise StorageError(
                    f"The vector store {path} was written by a newer MindBot "
                    f"(schema {version}, this one knows {_SCHEMA_VERSION})"
                )
            if tables and not {"nodes", "settings"} <= tables:
                raise StorageError(
                    f"{path} is an SQLite file but not a MindBot vector store "
                    f"(it holds {', '.join(sorted(tables))})"
                )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not tables:
                self._write(_create_schema)
            elif self._conn.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                raise StorageError(f"The vector store {path} is corrupt (PRAGMA quick_check)")
            self._load()
        except (sqlite3.Error, StorageError, ValueError) as e:
            self._conn.close()
            if isinstance(e, StorageError):
                raise
            raise StorageError(f"Cannot read the vector store {path}: {e}") from e
        logger.info(
            f"{self}: opened with {self._index.size} nodes in "
            f"{(time.perf_counter() - started) * 1000:.0f} ms"
        )

    def _load(self) -> None:
        """Read every embedding into a new index, from one snapshot of the file."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            row = conn.execute("SELECT value FROM settings WHERE key = 'dim'").fetchone()
            index = _MatrixIndex(int(row[0]) if row else 0)
            if index.dim:
                index.reserve(conn.execute("SELECT count(*) FROM nodes").fetchone()[0])
                cursor = conn.execute("SELECT node_id, embedding FROM nodes")
                while found := cursor.fetchmany(4096):
                    blob = b"".join(embedding for _, embedding in found)
                    vectors = np.frombuffer(blob, np.float32).reshape(len(found), index.dim)
                    index.put([node_id for node_id, _ in found], vectors, list)
        finally:
            conn.execute("COMMIT")
        self._index = index

    def _sync(self) -> None:
        """Reload if another connection changed the file since we last looked."""
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                logger.info(f"{self}: changed by another connection, reloading")
                self._load()
        except (sqlite3.Error, ValueError) as e:
            raise StorageError(f"Cannot read the vector store {self.path}: {e}") from e

    def _write(self, change: Callable[[sqlite3.Connection], None]) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                change(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StorageError(f"Cannot write the vector store {self.path}: {e}") from e

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StorageError(f"Cannot read the vector store {self.path}: {e}") from e

    def _remove(self, node_ids: list[str]) -> None:
        """Delete nodes from SQLite, then from the index."""
        doomed = [(i,) for i in dict.fromkeys(node_ids) if i in self._index.row_of]
        if not doomed:
            return
        self._write(lambda conn: conn.executemany("DELETE FROM nodes WHERE node_id = ?", doomed))
        self._index.remove([i for (i,) in doomed])
        logger.debug(f"{self}: deleted {len(doomed)} nodes")

    def _mask(self, query: VectorStoreQuery) -> np.ndarray | None:
        """The rows a query may return, or None for all of them."""
        index = self._index
        mask = None
        if query.filters is not None and query.filters.filters:
            mask = index.filter_mask(query.filters, self._metadata_column)
        # An empty list means no restriction: VectorStoreIndex passes ``node_ids=[]`` for a
        # store that holds the text itself.
        if query.node_ids:
            mask = _and(mask, index.rows_mask(query.node_ids))
        if query.doc_ids:
            node_ids: list[str] = []
            for chunk in _chunks(list(query.doc_ids)):
                found = self._read(
                    f"SELECT node_id FROM nodes WHERE ref_doc_id IN ({_marks(chunk)})", chunk
                )
                node_ids += [node_id for (node_id,) in found]
            mask = _and(mask, index.rows_mask(node_ids))
        return mask

    def _metadata_column(self, key: str) -> dict[str, Any]:
        """One metadata key's value for every node that has it."""
        if '"' in key:
            raise ValueError(f"{self}: cannot filter on a metadata key with '\"' ({key!r})")
        found = self._read("SELECT node_id, json_extract(metadata, ?) FROM nodes", (f'$."{key}"',))
        return {node_id: value for node_id, value in found if value is not None}

    def _select(self, node_ids: list[str] | None, filters: MetadataFilters | None) -> list[str]:
        index = self._index
        candidates = index.ids if node_ids is None else node_ids
        if filters is None or not filters.filters:
            return [i for i in candidates if i in index.row_of]
        mask = index.filter_mask(filters, self._metadata_column)
        return [i for i in candidates if i in index.row_of and mask[index.row_of[i]]]

    def _nodes(self, node_ids: list[str], *, with_embeddings: bool = False) -> list[BaseNode]:
        """The stored nodes with these ids, in the same order."""
        columns = "node_id, text, metadata" + (", embedding" if with_embeddings else "")
        found: dict[str, BaseNode] = {}
        for chunk in _chunks(node_ids):
            for row in self._read(
                f"SELECT {columns} FROM nodes WHERE node_id IN ({_marks(chunk)})", chunk
            ):
                node = metadata_dict_to_node(json.loads(row[2]), text=row[1])
                if with_embeddings:
                    node.embedding = np.frombuffer(row[3], dtype=np.float32).tolist()
                found[row[0]] = node
        return [found[i] for i in node_ids if i in found]


class _MatrixIndex:
    """Unit vectors in a growable matrix, row-aligned with their ids; not thread-safe.

    The metadata values that filters look at are loaded per key at the first filter that names
    the key, as row-aligned columns; the boolean masks of the latest filters are cached. Both
    are kept in sync on every change, so a write costs a filtered search nothing.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.size = 0
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self._matrix = np.empty((0, dim), dtype=np.float32)
        self._columns: dict[str, list[Any]] = {}
        # filter (as JSON) -> (its test of one row, its mask, as long as the matrix)
        self._masks: dict[str, tuple[Callable[[int], bool], np.ndarray]] = {}

    def put(
        self,
        ids: list[str],
        vectors: np.ndarray,
        metadata: Callable[[], list[dict[str, Any]]],
    ) -> None:
        """Replace known ids' rows, append new ones (``metadata`` is called only if needed)."""
        self.reserve(self.size + len(ids))
        unit = _normalized(vectors)
        metas = metadata() if self._columns else []
        for position, node_id in enumerate(ids):
            row = self.row_of.get(node_id)
            if row is None:
                row = self.size
                self.ids.append(node_id)
                self.row_of[node_id] = row
                for column in self._columns.values():
                    column.append(None)
                self.size += 1
            for key, column in self._columns.items():
                column[row] = metas[position].get(key)
            for matches, mask in self._masks.values():
                mask[row] = matches(row)
            self._matrix[row] = unit[position]

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all (with a quarter more, when it grows)."""
        if rows > self._matrix.shape[0]:
            capacity = max(1024, rows * 5 // 4)
            grown = np.empty((capacity, self.dim), dtype=np.float32)
            grown[: self.size] = self._matrix[: self.size]
            self._matrix = grown
            for cache_key, (matches, mask) in self._masks.items():
                self._masks[cache_key] = (matches, np.resize(mask, capacity))

    def remove(self, ids: list[str]) -> None:
        """Delete rows; the last row moves into each hole."""
        rows = sorted((self.row_of[i] for i in set(ids) if i in self.row_of), reverse=True)
        for row in rows:  # descending, so the last row is never one still to delete
            last = self.size - 1
            del self.row_of[self.ids[row]]
            if row != last:
                self._matrix[row] = self._matrix[last]
                self.ids[row] = self.ids[last]
                self.row_of[self.ids[row]] = row
                for column in self._columns.values():
                    column[row] = column[last]
                for _, mask in self._masks.values():
                    mask[row] = mask[last]
            self.ids.pop()
            for column in self._columns.values():
                column.pop()
            self.size -= 1

    def search(
        self, vector: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[list[str], list[float]]:
        """The ids and cosine similarities of the ``k`` best rows that ``mask`` allows."""
        unit = _normalized(vector[None, :])[0]
        # One thread on purpose: OpenBLAS's two-thread ``matrix @ unit`` was three times
        # slower here (see the module docstring) and takes the other core from speech.
        scores = np.einsum("ij,j->i", self._matrix[: self.size], unit)
        allowed = self.size
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
            allowed = int(np.count_nonzero(mask))
        k = min(k, allowed)
        if k <= 0:
            return [], []
        top = np.argpartition(-scores, k - 1)[:k] if k < self.size else np.arange(self.size)
        top = top[np.argsort(-scores[top], kind="stable")][:k]
        return [self.ids[row] for row in top], [float(scores[row]) for row in top]

    def rows_mask(self, ids: list[str]) -> np.ndarray:
        """A mask of the rows of these ids."""
        mask = np.zeros(self.size, dtype=bool)
        mask[[self.row_of[i] for i in ids if i in self.row_of]] = True
        return mask

    def filter_mask(
        self, filters: MetadataFilters, load_column: Callable[[str], dict[str, Any]]
    ) -> np.ndarray:
        """A mask of the rows whose metadata matches ``filters``, through LlamaIndex's filter.

        Args:
            filters: The filters.
            load_column: Gives one metadata key's value for every node id that has it.
        """
        cache_key = filters.model_dump_json()
        if cache_key in self._masks:
            self._masks[cache_key] = self._masks.pop(cache_key)  # now the latest
        else:
            keys = _filter_keys(filters)
            for key in keys - self._columns.keys():
                values = load_column(key)
                self._columns[key] = [values.get(node_id) for node_id in self.ids]
            columns = {key: self._columns[key] for key in keys}

            def row_metadata(row: int) -> dict[str, Any]:
                return {key: column[row] for key, column in columns.items()}

            matches = build_metadata_filter_fn(row_metadata, filters)  # type: ignore[arg-type]
            mask = np.zeros(self._matrix.shape[0], dtype=bool)
            mask[: self.size] = np.fromiter(map(matches, range(self.size)), bool, self.size)  # type: ignore[arg-type]
            self._masks[cache_key] = (matches, mask)  # type: ignore[assignment]
            while len(self._masks) > _CACHED_MASKS:
                del self._masks[next(iter(self._masks))]  # the least recently used
        return self._masks[cache_key][1][: self.size]


def _filter_keys(filters: MetadataFilters) -> set[str]:
    """The metadata keys that ``filters`` (and the filters nested in it) look at."""
    keys: set[str] = set()
    for item in filters.filters:
        keys |= _filter_keys(item) if isinstance(item, MetadataFilters) else {item.key}
    return keys


def _create_schema(conn: sqlite3.Connection) -> None:
    db = Database(conn)
    db["nodes"].create(  # type: ignore[union-attr]
        {"node_id": str, "ref_doc_id": str, "text": str, "metadata": str, "embedding": bytes},
        pk="node_id",
        not_null={"node_id", "text", "metadata", "embedding"},
    )
    db["nodes"].create_index(["ref_doc_id"])  # type: ignore[union-attr]
    db["settings"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _and(mask: np.ndarray | None, other: np.ndarray) -> np.ndarray:
    return other if mask is None else mask & other


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _marks(items: list[str]) -> str:
    return ", ".join("?" * len(items))


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


# -- DuckDB -----------------------------------------------------------------------------------


def _open_duckdb(path: Path) -> BasePydanticVectorStore:
    store_class = _duckdb_store_class()
    import duckdb

    try:
        return store_class(database_name=path.name, persist_dir=str(path.parent))
    except duckdb.Error as e:
        raise StorageError(f"Cannot open the vector store {path}: {e}") from e


@functools.cache
def _duckdb_store_class() -> type[BasePydanticVectorStore]:
    """LlamaIndex's DuckDB store, opening offline and closable.

    ``DuckDBVectorStore`` runs ``INSTALL json`` and ``INSTALL fts`` whenever it opens, which
    download extensions from the network (and fail offline). Its queries use neither FTS nor
    anything beyond the JSON extension that DuckDB's wheel links statically, so this subclass
    creates the same table without installing anything.
    """
    try:
        from llama_index.vector_stores.duckdb import DuckDBVectorStore
        from llama_index.vector_stores.duckdb.base import DuckDBTableIncorrectColumnsError
    except ImportError as e:
        raise ConfigError(
            "The 'duckdb' vector store needs the package llama-index-vector-stores-duckdb "
            "(dependency group kb-candidates)"
        ) from e

    class OfflineDuckDBVectorStore(DuckDBVectorStore):
        """``DuckDBVectorStore`` that installs no extension and can be closed."""

        @classmethod
        def class_name(cls) -> str:
            return "OfflineDuckDBVectorStore"

        @classmethod
        def _initialize_table(cls, conn: Any, table_name: str, embed_dim: int | None) -> None:
            embedding_type = cls._get_embedding_type(embed_dim)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table_name} (node_id VARCHAR PRIMARY KEY, "
                f"text TEXT, embedding {embedding_type}, metadata_ JSON)"
            )
            columns = conn.table(table_name).describe().columns
            required = ["node_id", "text", "embedding", "metadata_"]
            if any(column not in columns for column in required):
                raise DuckDBTableIncorrectColumnsError(table_name, required, columns)

        def close(self) -> None:
            """Close the database file."""
            if self._shared_conn is not None:
                self._shared_conn.close()
                self._shared_conn = None
                self._thread_local.conn = None

    return OfflineDuckDBVectorStore
