"""all-MiniLM-L6-v2 on onnxruntime: checked against an independent numpy BERT, published
similarities, and its cache's behaviour when the file is reused, stale or corrupt."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from mindbot.errors import MindBotError
from mindbot.kb import embeddings
from mindbot.kb.embeddings import EMBEDDING_DIM, MiniLMEmbedding, default_model_dir, ensure_onnx

MODEL_DIR = default_model_dir()
ONNX_NAME = "all-MiniLM-L6-v2.v1.onnx"

LONG_TEXT = " ".join(
    f"Clause {i}: the tenant shall keep the premises clean and report any damage promptly."
    for i in range(40)
)  # far beyond 256 tokens
SENTENCES = [
    "Hi.",
    "How many vacation days do I get?",
    "Employees receive 25 days of paid annual leave, plus public holidays in their region.",
    "The router's LED blinks red when the firmware update fails; hold reset for ten seconds "
    "and it restarts with the previous firmware, keeping your Wi-Fi name and password.",
    "",
    LONG_TEXT,
]


# --- An independent BERT forward pass in float64 numpy, one unpadded text at a time ----------


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * gamma + beta


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _reference_embedding(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2 for one tokenized text: BERT, mean, normalize."""
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    for i in range(6):
        p = f"encoder.layer.{i}."

        def linear(h, name, p=p):
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def heads(h):
            return h.reshape(n, 12, 32).transpose(1, 0, 2)  # [heads, n, 32]

        q = heads(linear(x, "attention.self.query"))
        k = heads(linear(x, "attention.self.key"))
        v = heads(linear(x, "attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(32)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, 384)
        x = _layer_norm(
            x + linear(context, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        ffn = linear(_gelu(linear(x, "intermediate.dense")), "output.dense")
        x = _layer_norm(x + ffn, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The numpy reference's embeddings of ``SENTENCES``, truncated to 256 tokens."""
    stored = load_file(MODEL_DIR / "model.safetensors")
    weights = {name: array.astype(np.float64) for name, array in stored.items()}
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    return np.stack([_reference_embedding(weights, tokenizer.encode(s).ids) for s in SENTENCES])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def model(cache_dir) -> MiniLMEmbedding:
    return MiniLMEmbedding(cache_dir)


# --- Correctness ------------------------------------------------------------------------------


def test_a_padded_batch_matches_the_numpy_reference(model, reference):
    batch = model.embed_texts(SENTENCES)

    assert batch.shape == (len(SENTENCES), EMBEDDING_DIM)
    assert batch.dtype == np.float32
    assert np.abs(batch - reference).max() < 1e-5


def test_each_text_alone_matches_the_reference_and_its_place_in_a_padded_batch(model, reference):
    alone = np.stack([model.embed_query(s) for s in SENTENCES])
    batch = model.embed_texts(SENTENCES)

    assert np.abs(alone - reference).max() < 1e-5
    assert np.abs(alone - batch).max() < 1e-5


def test_batches_sorted_by_length_come_back_in_the_order_of_the_texts(cache_dir, reference):
    small_batches = MiniLMEmbedding(cache_dir, embed_batch_size=2)
    shuffled = [5, 4, 0, 3, 1, 2]  # longest first, the empty string second
    texts = [SENTENCES[i] for i in shuffled]

    # Sorted by length into three ONNX runs of two, then put back in input order.
    direct = small_batches.embed_texts(texts)
    # LlamaIndex hands over two texts at a time; each pair is sorted, run, and put back.
    via_llama_index = np.array(small_batches.get_text_embedding_batch(texts))

    assert np.abs(direct - reference[shuffled]).max() < 1e-5
    assert np.abs(via_llama_index - reference[shuffled]).max() < 1e-5


def test_the_similarities_published_by_sentence_transformers_are_reproduced(model):
    # The quickstart of sentence-transformers' README, with all-MiniLM-L6-v2.
    e = model.embed_texts(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])

    assert np.abs(e @ e.T - published).max() < 2e-4


def test_text_beyond_256_tokens_is_cut_there(model):
    longer = model.embed_query(LONG_TEXT + " The landlord pays for the roof.")

    assert np.abs(longer - model.embed_query(LONG_TEXT)).max() < 1e-6


def test_a_question_is_closest_to_the_passage_that_answers_it(model):
    query = model.get_query_embedding("How many vacation days do I get?")
    leave, router = model.get_text_embedding_batch(
        [
            "Employees receive 25 days of paid annual leave.",
            "The router's LED blinks red when the firmware update fails.",
        ]
    )

    assert np.dot(query, leave) > np.dot(query, router) + 0.2


def test_every_embedding_is_a_unit_vector_even_of_an_empty_string(model):
    vectors = model.embed_texts(SENTENCES)

    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    empty = model.get_text_embedding("")
    assert len(empty) == EMBEDDING_DIM
    assert np.isfinite(empty).all()
    assert model.embed_texts([]).shape == (0, EMBEDDING_DIM)
    assert model.get_text_embedding_batch([]) == []


async def test_async_variants_give_the_sync_results(model):
    query = await model.aget_query_embedding("Where is my invoice?")
    texts = await model.aget_text_embedding_batch(SENTENCES[:3])
    one = await model.aget_text_embedding(SENTENCES[2])

    assert np.allclose(query, model.get_query_embedding("Where is my invoice?"), atol=1e-6)
    assert np.allclose(texts, model.embed_texts(SENTENCES[:3]), atol=1e-5)
    assert np.allclose(one, texts[2], atol=1e-5)


async def test_concurrent_async_queries_each_get_their_own_embedding(model):
    queries = [f"Question number {i} about the warranty?" for i in range(8)]

    results = await asyncio.gather(*(model.aget_query_embedding(q) for q in queries))

    assert np.allclose(results, [model.embed_query(q) for q in queries], atol=1e-6)


def test_queries_from_many_threads_at_once_match_one_at_a_time(model):
    queries = [f"Can I return item {i} after {i % 7} weeks?" for i in range(40)]
    expected = [model.embed_query(q) for q in queries]

    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(model.get_query_embedding, queries))

    assert np.allclose(got, expected, atol=1e-6)


# --- The cache ------------------------------------------------------------------------------


def test_a_cached_model_is_reused_not_rebuilt(model, cache_dir):
    path = cache_dir / ONNX_NAME
    before = path.stat().st_mtime_ns
    again = MiniLMEmbedding(cache_dir)

    assert path.stat().st_mtime_ns == before
    assert np.abs(again.embed_query("Hello") - model.embed_query("Hello")).max() < 1e-7


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_weight_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, still parses: only the checksum can tell
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an onnx model")


def _stale_manifest(path: Path) -> None:
    manifest = path.with_name(path.name + ".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "graph_version": 0}))


def _no_manifest(path: Path) -> None:
    path.with_name(path.name + ".json").unlink()


@pytest.mark.parametrize(
    "damage", [_truncate, _flip_a_weight_byte, _garbage, _stale_manifest, _no_manifest]
)
def test_a_corrupt_or_stale_cached_model_is_rebuilt(model, cache_dir, tmp_path, damage):
    good = (cache_dir / ONNX_NAME).read_bytes()
    for name in (ONNX_NAME, ONNX_NAME + ".json"):
        shutil.copy2(cache_dir / name, tmp_path / name)
    damage(tmp_path / ONNX_NAME)
    damaged_mtime = (tmp_path / ONNX_NAME).stat().st_mtime_ns

    rebuilt = MiniLMEmbedding(tmp_path)

    assert (tmp_path / ONNX_NAME).stat().st_mtime_ns != damaged_mtime
    assert (tmp_path / ONNX_NAME).read_bytes() == good
    assert np.abs(rebuilt.embed_query("Hello") - model.embed_query("Hello")).max() < 1e-7
    assert sorted(p.name for p in tmp_path.iterdir()) == [ONNX_NAME, ONNX_NAME + ".json"]


def test_a_crash_while_writing_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        embeddings.build_onnx(MODEL_DIR, target)

    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_ensure_onnx_returns_the_cached_path(model, cache_dir):
    assert ensure_onnx(cache_dir) == cache_dir / ONNX_NAME


def test_missing_weights_are_an_error_naming_the_folder(tmp_path):
    with pytest.raises(MindBotError, match="no-weights-here"):
        MiniLMEmbedding(tmp_path / "cache", model_dir=tmp_path / "no-weights-here")
