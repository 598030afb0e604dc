"""The knowledge base's vector stores: each supported kind, at a small scale."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import NodeRelationship, QueryBundle, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from mindbot.errors import ConfigError, StorageError
from mindbot.kb.stores import DEFAULT_STORE_KIND, STORE_KINDS, SQLiteVectorStore, open_vector_store

DIM = 32
DOCS = 12
CHUNKS_PER_DOC = 25  # 300 nodes

_PACKAGES = {"duckdb": "llama_index.vector_stores.duckdb"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


def _kinds() -> list:
    params = []
    for kind in STORE_KINDS:
        module = _PACKAGES.get(kind)
        missing = module is not None and not _installed(module)
        reason = f"{kind}: {module} is not installed (dependency group kb-candidates)"
        params.append(pytest.param(kind, marks=pytest.mark.skipif(missing, reason=reason)))
    return params


@pytest.fixture(params=_kinds())
def kind(request) -> str:
    """Each supported kind of store."""
    return request.param


def make_nodes(kb: str = "support", docs: int = DOCS, seed: int = 0) -> list[TextNode]:
    """Chunks of product manuals, with the metadata ingestion gives them and random embeddings."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(docs * CHUNKS_PER_DOC, DIM)).astype(np.float32)
    nodes = []
    for row, vector in enumerate(vectors):
        doc, part = divmod(row, CHUNKS_PER_DOC)
        doc_id = f"{kb}-manual-{doc:02d}"
        nodes.append(
            TextNode(
                id_=f"{doc_id}-chunk-{part:02d}",
                text=f"Section {part} of the manual for product {doc}: hold the reset button "
                f"for ten seconds, then wait for the light to turn green. ({kb})",
                embedding=vector.tolist(),
                metadata={
                    "kb": kb,
                    "doc_id": doc_id,
                    "file": f"manuals/{doc_id}.pdf",
                    "title": f"Product {doc} manual",
                    "section": f"{part // 5 + 1}. Troubleshooting",
                    "page": part // 2 + 1,
                },
                relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)},
            )
        )
    return nodes


def nearest(store, vector, k: int = 5, filters: MetadataFilters | None = None):
    """The store's answer to a top-``k`` query."""
    return store.query(
        VectorStoreQuery(query_embedding=list(vector), similarity_top_k=k, filters=filters)
    )


def all_ids(store) -> set[str]:
    """Every node id the store holds (a query for more nodes than it has)."""
    return set(nearest(store, np.ones(DIM), k=10_000).ids)


def exact_top(nodes: list[TextNode], vector, k: int = 5) -> list[str]:
    """The ``k`` nearest nodes by cosine similarity, computed here."""
    matrix = np.array([n.get_embedding() for n in nodes])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = matrix @ (np.asarray(vector) / np.linalg.norm(vector))
    return [nodes[i].node_id for i in np.argsort(-scores)[:k]]


@pytest.fixture
def filled(kind, tmp_path):
    """A store of ``kind`` holding the 300 nodes of ``make_nodes()``."""
    store = open_vector_store(kind, tmp_path)
    nodes = make_nodes()
    store.add(nodes)
    yield store, nodes
    store.close()


def test_the_default_kind_is_supported():
    assert DEFAULT_STORE_KIND in STORE_KINDS


def test_a_query_returns_the_nearest_nodes_with_text_and_metadata(filled):
    store, nodes = filled
    target = nodes[123]
    result = nearest(store, target.get_embedding())
    assert result.ids[0] == target.node_id
    assert result.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert result.nodes[0].get_content() == target.get_content()
    assert result.nodes[0].metadata == target.metadata
    assert result.nodes[0].ref_doc_id == target.ref_doc_id
    probe = np.random.default_rng(99).normal(size=DIM)
    assert nearest(store, probe).ids == exact_top(nodes, probe)


def test_delete_by_ref_doc_id_removes_exactly_that_documents_nodes(filled):
    store, nodes = filled
    doomed = {n.node_id for n in nodes if n.ref_doc_id == "support-manual-03"}
    assert len(doomed) == CHUNKS_PER_DOC
    store.delete("support-manual-03")
    assert all_ids(store) == {n.node_id for n in nodes} - doomed
    victim = next(n for n in nodes if n.node_id in doomed)
    assert not doomed & set(nearest(store, victim.get_embedding(), k=20).ids)


def test_a_document_updated_by_delete_and_add_shows_only_its_new_version(filled):
    store, nodes = filled
    old = [n for n in nodes if n.ref_doc_id == "support-manual-05"]
    new = make_nodes(seed=7)[5 * CHUNKS_PER_DOC : 6 * CHUNKS_PER_DOC]
    for node in new:
        node.id_ = node.node_id + "-v2"
    store.delete("support-manual-05")
    store.add(new)
    assert nearest(store, new[4].get_embedding()).ids[0] == new[4].node_id
    ids = all_ids(store)
    assert len(ids) == len(nodes)
    assert not {n.node_id for n in old} & ids


def test_a_reopened_store_keeps_its_data(kind, tmp_path):
    nodes = make_nodes()
    store = open_vector_store(kind, tmp_path)
    store.add(nodes)
    store.delete("support-manual-00")
    probe = np.random.default_rng(5).normal(size=DIM)
    before = nearest(store, probe, k=10)
    store.close()

    reopened = open_vector_store(kind, tmp_path)
    try:
        after = nearest(reopened, probe, k=10)
        assert after.ids == before.ids
        assert after.similarities == pytest.approx(before.similarities, abs=1e-5)
        assert [n.get_content() for n in after.nodes] == [n.get_content() for n in before.nodes]
        assert len(all_ids(reopened)) == len(nodes) - CHUNKS_PER_DOC
    finally:
        reopened.close()


def test_two_collections_do_not_see_each_others_nodes(kind, tmp_path):
    shop = open_vector_store(kind, tmp_path, collection="shop")
    clinic = open_vector_store(kind, tmp_path, collection="clinic")
    try:
        shop_nodes = make_nodes("shop", docs=4, seed=1)
        clinic_nodes = make_nodes("clinic", docs=4, seed=2)
        shop.add(shop_nodes)
        clinic.add(clinic_nodes)
        assert all_ids(shop) == {n.node_id for n in shop_nodes}
        assert all_ids(clinic) == {n.node_id for n in clinic_nodes}
        assert nearest(shop, clinic_nodes[0].get_embedding()).ids[0] != clinic_nodes[0].node_id
        clinic.delete(clinic_nodes[0].ref_doc_id)
        assert len(all_ids(shop)) == len(shop_nodes)
    finally:
        shop.close()
        clinic.close()


def test_a_kb_filter_returns_only_that_kbs_nodes(kind, tmp_path):
    store = open_vector_store(kind, tmp_path)
    try:
        shop_nodes = make_nodes("shop", docs=4, seed=1)
        clinic_nodes = make_nodes("clinic", docs=4, seed=2)
        store.add(shop_nodes + clinic_nodes)
        only_shop = MetadataFilters(filters=[MetadataFilter(key="kb", value="shop")])
        result = nearest(store, clinic_nodes[0].get_embedding(), k=10, filters=only_shop)
        assert len(result.ids) == 10
        assert {n.metadata["kb"] for n in result.nodes} == {"shop"}
        assert result.ids == exact_top(shop_nodes, clinic_nodes[0].get_embedding(), k=10)
    finally:
        store.close()


def test_a_kb_filter_follows_later_adds_and_deletes(kind, tmp_path):
    store = open_vector_store(kind, tmp_path)
    try:
        shop_nodes = make_nodes("shop", docs=2, seed=1)
        clinic_nodes = make_nodes("clinic", docs=2, seed=2)
        store.add(shop_nodes + clinic_nodes)
        only_clinic = MetadataFilters(filters=[MetadataFilter(key="kb", value="clinic")])
        target = shop_nodes[0].get_embedding()
        assert set(nearest(store, target, k=100, filters=only_clinic).ids) == {
            n.node_id for n in clinic_nodes
        }

        late = make_nodes("clinic", docs=3, seed=3)[2 * CHUNKS_PER_DOC :]
        store.add(late)
        store.delete(clinic_nodes[0].ref_doc_id)
        store.delete(shop_nodes[-1].ref_doc_id)
        expected = {n.node_id for n in clinic_nodes[CHUNKS_PER_DOC:] + late}
        assert set(nearest(store, target, k=100, filters=only_clinic).ids) == expected
        assert nearest(store, late[3].get_embedding(), filters=only_clinic).ids[0] == (
            late[3].node_id
        )
    finally:
        store.close()


def test_the_store_works_under_a_llamaindex_vector_store_index(filled):
    store, nodes = filled
    index = VectorStoreIndex.from_vector_store(store, embed_model=MockEmbedding(embed_dim=DIM))
    retriever = index.as_retriever(similarity_top_k=3)
    target = nodes[42]
    found = retriever.retrieve(QueryBundle(query_str="reset", embedding=target.get_embedding()))
    assert found[0].node.node_id == target.node_id
    assert found[0].node.get_content() == target.get_content()


def test_a_file_that_is_not_a_store_gives_a_storage_error_and_is_left_alone(kind, tmp_path):
    path = tmp_path / f"default.{kind}"
    garbage = b"this is not a database file, but someone's notes\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StorageError, match="default"):
        open_vector_store(kind, tmp_path)
    assert path.read_bytes() == garbage


def test_a_damaged_store_gives_a_storage_error_and_its_data_survives(kind, tmp_path):
    nodes = make_nodes()
    store = open_vector_store(kind, tmp_path)
    store.add(nodes)
    store.close()
    path = tmp_path / f"default.{kind}"
    original = path.read_bytes()
    path.write_bytes(b"\xff" * 64 + original[64:])  # a clobbered header

    with pytest.raises(StorageError, match=str(path.name)):
        open_vector_store(kind, tmp_path)

    path.write_bytes(original)
    repaired = open_vector_store(kind, tmp_path)
    try:
        assert len(all_ids(repaired)) == len(nodes)
    finally:
        repaired.close()


def test_an_unreadable_store_path_gives_a_storage_error(kind, tmp_path):
    (tmp_path / f"default.{kind}").mkdir()  # a folder where the file should be
    with pytest.raises(StorageError, match="default"):
        open_vector_store(kind, tmp_path)


def test_an_unknown_kind_or_a_bad_collection_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="faiss"):
        open_vector_store("faiss", tmp_path)
    with pytest.raises(ConfigError, match="collection"):
        open_vector_store(DEFAULT_STORE_KIND, tmp_path, collection="../escape")


# -- the SQLite store's own guarantees ---------------------------------------------------------


def test_sqlite_store_sees_writes_made_through_another_connection(tmp_path):
    reader = SQLiteVectorStore(path=tmp_path / "kb.sqlite")
    writer = SQLiteVectorStore(path=tmp_path / "kb.sqlite")
    try:
        nodes = make_nodes(docs=2)
        writer.add(nodes)
        assert nearest(reader, nodes[7].get_embedding()).ids[0] == nodes[7].node_id
        writer.delete(nodes[7].ref_doc_id)
        assert reader.count() == CHUNKS_PER_DOC
        assert nodes[7].node_id not in nearest(reader, nodes[7].get_embedding()).ids
    finally:
        reader.close()
        writer.close()


def test_sqlite_store_refuses_an_embedding_of_another_dimension(tmp_path):
    store = SQLiteVectorStore(path=tmp_path / "kb.sqlite")
    try:
        store.add(make_nodes(docs=1))
        with pytest.raises(ValueError, match="dimensions"):
            nearest(store, np.ones(DIM + 1))
        wrong = TextNode(id_="x", text="x", embedding=[1.0] * (DIM + 1))
        with pytest.raises(ValueError, match="dimensions"):
            store.add([wrong])
        assert store.count() == CHUNKS_PER_DOC
    finally:
        store.close()


def test_sqlite_store_refuses_another_sqlite_database_untouched(tmp_path):
    import sqlite3

    path = tmp_path / "default.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('Ada')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match="not a MindBot vector store"):
        open_vector_store("sqlite", tmp_path)
    assert path.read_bytes() == before


async def test_sqlite_store_answers_async_queries(tmp_path):
    store = SQLiteVectorStore(path=tmp_path / "kb.sqlite")
    try:
        nodes = make_nodes(docs=2)
        store.add(nodes)
        result = await store.aquery(
            VectorStoreQuery(query_embedding=nodes[3].get_embedding(), similarity_top_k=1)
        )
        assert result.ids == [nodes[3].node_id]
    finally:
        store.close()
