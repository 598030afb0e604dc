"""OpenAI embeddings for the knowledge base (``kb.embedding: openai``), through the real OpenAI
client against the stand-in's ``/v1/embeddings``; and what happens to a collection when its
embedding model changes."""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from mindbot.errors import ConfigError
from mindbot.kb.embeddings import MiniLMEmbedding, embedding_model
from mindbot.kb.knowledge import KnowledgeBase
from mindbot.kb.settings import KnowledgeSettings
from mindbot.standins import ScriptedLLMServer

CORPUS = Path(__file__).parent / "fixtures" / "kb" / "corpus"
QUESTION = "What is the nightly hotel rate limit in Boston?"


@pytest.fixture
async def openai():
    async with ScriptedLLMServer(api_key="sk-test") as server:
        yield server


def openai_settings(server, **overrides) -> KnowledgeSettings:
    # Hashed bag-of-words similarities are lower than MiniLM's: no threshold here.
    values = {"embedding": "openai", "openai_base_url": server.base_url, "min_score": 0.0}
    return KnowledgeSettings(**{**values, **overrides})


async def test_documents_are_embedded_and_searched_through_the_openai_api(openai, tmp_path):
    settings = openai_settings(openai, openai_dimensions=512)
    model = embedding_model(settings, openai_api_key=SecretStr("sk-test"), cache_dir=tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(CORPUS / "travel-policy.md", docs)
    with KnowledgeBase(tmp_path / "kb", settings=settings, embed_model=model) as kb:
        report = await asyncio.to_thread(kb.add, [docs])
        assert report.chunks > 5 and not report.skipped
        best = (await kb.asearch(QUESTION))[0]
    assert best.title == "Business Travel Policy"
    assert "$300" in best.text
    requests = openai.embedding_requests
    assert {r["model"] for r in requests} == {"text-embedding-3-small"}
    assert {r["dimensions"] for r in requests} == {512}
    embedded = [text for r in requests for text in r["input"]]
    assert len(embedded) == report.chunks + 1  # every chunk, then the question
    assert QUESTION in embedded[-1]


async def test_a_wrong_key_is_an_error_and_the_index_is_left_as_it_was(openai, tmp_path):
    settings = openai_settings(openai)
    model = embedding_model(settings, openai_api_key=SecretStr("sk-wrong"), cache_dir=tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(CORPUS / "travel-policy.md", docs)
    with KnowledgeBase(tmp_path / "kb", settings=settings, embed_model=model) as kb:
        report = await asyncio.to_thread(kb.add, [docs])
        assert report.chunks == 0
        assert [s.reason for s in report.skipped] and "401" in report.skipped[0].reason
        assert kb.list() == []


def test_openai_embeddings_need_a_key():
    settings = KnowledgeSettings(embedding="openai")
    with pytest.raises(ConfigError, match="MINDBOT_OPENAI_API_KEY"):
        embedding_model(settings, openai_api_key=None, cache_dir=Path("/nonexistent"))


async def test_a_new_embedding_model_drops_the_old_vectors_until_reindexed(
    openai, tmp_path, warnings_logged
):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(CORPUS / "travel-policy.md", docs)
    folder = tmp_path / "kb"
    with KnowledgeBase(
        folder, settings=KnowledgeSettings(), embed_model=MiniLMEmbedding(tmp_path / "models")
    ) as kb:
        kb.add([docs])
        assert kb.search(QUESTION)

    settings = openai_settings(openai)
    model = embedding_model(settings, openai_api_key=SecretStr("sk-test"), cache_dir=tmp_path)
    with KnowledgeBase(folder, settings=settings, embed_model=model) as kb:
        assert any("were embedded with all-MiniLM-L6-v2" in m for _, m in warnings_logged)
        # 384-d MiniLM vectors are never compared with OpenAI's: nothing is found yet.
        assert await kb.asearch(QUESTION) == []
        assert [d.title for d in kb.list()] == ["Business Travel Policy"]
        await asyncio.to_thread(kb.reindex)
        assert (await kb.asearch(QUESTION))[0].title == "Business Travel Policy"

    # The same model again: nothing is dropped, no warning.
    warnings_logged.clear()
    with KnowledgeBase(folder, settings=settings, embed_model=model) as kb:
        assert await kb.asearch(QUESTION)
    assert not warnings_logged


async def test_the_stand_in_serves_float_and_base64_and_refuses_bad_input(openai):
    async with httpx.AsyncClient(
        base_url=openai.base_url, headers={"Authorization": "Bearer sk-test"}
    ) as http:
        body = {"model": "text-embedding-3-small", "input": ["hotel rate", "rate of hotels"]}
        floats = (await http.post("/embeddings", json=body)).json()
        as_base64 = {**body, "encoding_format": "base64"}
        encoded = (await http.post("/embeddings", json=as_base64)).json()
        a = np.array(floats["data"][0]["embedding"])
        b = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(a, b, atol=1e-6) and abs(np.linalg.norm(a) - 1) < 1e-5
        near = a @ np.array(floats["data"][1]["embedding"])
        assert near > 0.5  # shared word stems bring texts together
        for bad in ({"model": "m", "input": []}, {"model": "m", "input": [""]}, {"input": "x"}):
            response = await http.post("/embeddings", json=bad)
            assert response.status_code == 400 and "error" in response.json()
        response = await http.post("/embeddings", content=b"{not json")
        assert response.status_code == 400
