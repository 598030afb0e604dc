"""The knowledge base's settings: where it lives, how documents are cut, what may be ingested.

They live under ``Settings.kb``, so they come from the same places as every other setting:
``MINDBOT_KB__<FIELD>`` environment variables (a list is JSON), or the ``kb:`` section of the
YAML settings file::

    kb:
      top_k: 3
      watch_dirs: [/srv/mindbot/docs]      # re-synced while MindBot runs
      allowed_dirs: [/srv/mindbot/docs]    # nothing outside may be ingested
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MIN_SCORE = 0.26
"""Cosine similarity below which a passage is not relevant (all-MiniLM-L6-v2, as chunks are
embedded by ``mindbot.kb.knowledge``).

Measured with ``mindbot kb eval`` on ``tests/fixtures/kb/eval.yaml`` over its corpus: the best
passage of a small-talk utterance ("hi there", "can you tell me a joke?", "what's the weather
like today?"...) scores 0.23 at most, while every expected passage found in the top three of an
answerable question scores 0.28 or more. 0.26 sits in that gap: small talk retrieves nothing and
no answerable question loses its hit.
"""


class KnowledgeSettings(BaseModel):
    """The knowledge base (RAG): storage, chunking, retrieval and ingestion limits."""

    model_config = ConfigDict(extra="forbid")

    folder: Path | None = Field(
        default=None, description="Where the collections are stored; default: DATA_DIR/kb."
    )
    store: Literal["sqlite", "duckdb"] = Field(
        default="sqlite", description="The vector store (see mindbot/kb/stores.py)."
    )
    embedding: Literal["minilm", "openai"] = Field(
        default="minilm",
        description="minilm: all-MiniLM-L6-v2 on this machine; openai: OpenAI's embeddings API "
        "(uses MINDBOT_OPENAI_API_KEY). Changing it re-embeds each collection on its next sync "
        "or `mindbot kb reindex`; re-measure min_score with `mindbot kb eval`.",
    )
    openai_model: str = Field(
        default="text-embedding-3-small", description="The OpenAI embedding model."
    )
    openai_base_url: str | None = Field(
        default=None, description="An OpenAI-compatible embeddings endpoint; default: OpenAI's."
    )
    openai_dimensions: int | None = Field(
        default=None, ge=1, le=3072, description="Shorter OpenAI embeddings (text-embedding-3)."
    )
    top_k: int = Field(default=3, ge=1, le=50, description="Passages returned by a search.")
    min_score: float = Field(
        default=DEFAULT_MIN_SCORE,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity below which a passage is left out.",
    )
    chunk_words: int = Field(
        default=150,
        ge=30,
        le=190,
        description="Words per chunk, about; the embedding model reads 256 word pieces at most.",
    )
    chunk_overlap: int = Field(
        default=20, ge=0, le=100, description="Words repeated between neighbouring chunks."
    )
    watch_dirs: list[Path] = Field(
        default_factory=list, description="Folders re-synced while MindBot runs (JSON list)."
    )
    allowed_dirs: list[Path] = Field(
        default_factory=list,
        description="When set, only files inside these folders may be ingested (JSON list).",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Allow URLs that resolve to loopback, private or link-local addresses.",
    )
    max_file_mb: float = Field(
        default=20.0, gt=0, description="Files and downloads larger than this are skipped."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> KnowledgeSettings:
        if self.chunk_overlap >= self.chunk_words // 2:
            raise ValueError("kb.chunk_overlap must be less than half of kb.chunk_words")
        return self
