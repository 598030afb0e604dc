"""The knowledge base ingests, keeps in sync, refuses bad input and retrieves the right passages.

Real embeddings (all-MiniLM-L6-v2 on onnxruntime) and the real SQLite store throughout. The
fixture corpus is embedded once per module (``corpus_kb``); tests that change documents use
small knowledge bases of their own.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import socket
import threading
from pathlib import Path

import httpx
import pytest
import yaml
from llama_index.core.schema import MetadataMode
from tokenizers import Tokenizer

from mindbot.kb.commands import kb_add, kb_eval, kb_list, kb_remove
from mindbot.kb.embeddings import MAX_SEQ_LENGTH, MiniLMEmbedding
from mindbot.kb.knowledge import KnowledgeBase, KnowledgeError, speech_text
from mindbot.kb.settings import KnowledgeSettings
from mindbot.kb.stores import open_vector_store

KB = Path(__file__).parent / "fixtures" / "kb"
CORPUS = KB / "corpus"
BAD = KB / "bad"
EVAL = KB / "eval.yaml"
CANARY = "Kestrel Point"

QUESTIONS = {item["id"]: item for item in yaml.safe_load(EVAL.read_text())["questions"]}
SMALL_TALK = [item for item in QUESTIONS.values() if item.get("expected") == "none"]
TITLES = {
    "employee-handbook.md": "Harbor Lane Outfitters Employee Handbook",
    "travel-policy.md": "Business Travel Policy",
    "product-faq.html": "Product FAQ",
    "store-policies.pdf": "Store Policies",
    "it-security-guide.docx": "IT and Security Guide for New Team Members",
    "release-notes.txt": "Summit GPS X2 and TrailSync Release Notes",
}

FERRY = """# Ferry Guide

## Departures

The Bellport ferry leaves the Wharf Street pier at 7:15 every morning and returns at 6 p.m.
Tickets cost 12 dollars for adults and are sold on board.

## Bicycles

Bicycles ride free on the ferry. Park them on the lower deck near the stern.
"""

BAKERY = """# Bakery Notes

## Sourdough Starter

Feed the rye starter twice a day with equal weights of flour and water, and keep it at room
temperature in the proofing cabinet next to the oven.
"""


@pytest.fixture(scope="module")
def embed_model(tmp_path_factory) -> MiniLMEmbedding:
    return MiniLMEmbedding(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs") / "corpus"
    shutil.copytree(CORPUS, folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, corpus_dir, embed_model):
    """The whole corpus, ingested once: (knowledge base, its first report)."""
    folder = tmp_path_factory.mktemp("kb")
    kb = KnowledgeBase(
        folder, collection="corpus", settings=KnowledgeSettings(), embed_model=embed_model
    )
    report = kb.add([corpus_dir])
    yield kb, report
    kb.close()


@pytest.fixture
def make_kb(tmp_path, embed_model):
    """Open small knowledge bases in ``tmp_path / "kb"``; closed at the end of the test."""
    opened: list[KnowledgeBase] = []

    def make(collection: str = "default", **settings) -> KnowledgeBase:
        kb = KnowledgeBase(
            tmp_path / "kb",
            collection=collection,
            settings=KnowledgeSettings(**settings),
            embed_model=embed_model,
        )
        opened.append(kb)
        return kb

    yield make
    for kb in opened:
        kb.close()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def hit(passages, source: str, section: str) -> bool:
    return any(Path(p.source).name == source and p.section == section for p in passages)


# --- Ingesting the corpus ---------------------------------------------------------------------


def test_the_whole_corpus_is_ingested_without_a_skip(corpus):
    kb, report = corpus
    assert sorted(report.added) == sorted(TITLES)
    assert report.skipped == [] and report.warnings == []
    assert report.chunks > 100
    print(f"\ncorpus ingestion: {report.summary()}")
    assert {d.doc_id: d.title for d in kb.list()} == TITLES


def test_every_chunk_carries_its_document_section_and_page(corpus, embed_model):
    kb, _ = corpus
    store = open_vector_store("sqlite", kb.folder, collection="corpus")
    nodes = store.get_nodes()
    store.close()
    tokenizer = Tokenizer.from_file(str(embed_model.model_dir / "tokenizer.json"))
    by_doc: dict[str, list] = {}
    for node in nodes:
        by_doc.setdefault(node.metadata["doc_id"], []).append(node)
        assert node.ref_doc_id == node.metadata["doc_id"]
        assert node.metadata["title"] == TITLES[node.metadata["doc_id"]]
        assert len(node.metadata["doc_hash"]) == 64
        embedded = node.get_content(metadata_mode=MetadataMode.EMBED)
        assert len(tokenizer.encode(embedded).ids) <= MAX_SEQ_LENGTH, "a chunk would be cut"
    assert sum(len(chunks) for chunks in by_doc.values()) == sum(d.chunks for d in kb.list())
    pdf_pages = {node.metadata["page"] for node in by_doc["store-policies.pdf"]}
    assert pdf_pages == set(range(1, 8))
    assert all(node.metadata["page"] is None for node in by_doc["employee-handbook.md"])
    sections = {doc: {n.metadata["section"] for n in chunks} for doc, chunks in by_doc.items()}
    assert {"Sick Leave", "Paid Time Off (PTO)"} <= sections["employee-handbook.md"]
    assert "Do gift cards expire?" in sections["product-faq.html"]
    assert "Day One" in sections["it-security-guide.docx"]
    assert "Battery Care" in sections["release-notes.txt"]
    # The page footer of the PDF and the site navigation of the HTML are not text.
    assert not any("Page 1 of 7" in node.text for node in nodes)
    assert not any("Home | Shop" in node.text for node in nodes)


def test_a_pdf_passage_is_labelled_with_its_title_section_and_page(corpus):
    kb, _ = corpus
    passages = kb.search(QUESTIONS["sp-02"]["question"])
    found = [p for p in passages if p.section == "Online Purchases"]
    assert found, [p.label for p in passages]
    assert found[0].label == "Store Policies, section Online Purchases, page 1"
    assert found[0].doc_id == "store-policies.pdf"


@pytest.mark.parametrize("question_id", ["hb-05", "tp-03", "faq-16", "sp-12", "it-01", "rn-03"])
def test_a_question_retrieves_the_section_that_answers_it(corpus, question_id):
    kb, _ = corpus
    item = QUESTIONS[question_id]
    passages = kb.search(item["question"])
    assert hit(passages, item["source"], item["section"]), [p.label for p in passages]
    assert all(p.score >= kb.settings.min_score for p in passages)
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


@pytest.mark.parametrize("item", SMALL_TALK, ids=lambda item: item["id"])
def test_small_talk_retrieves_nothing(corpus, item):
    kb, _ = corpus
    assert kb.search(item["question"]) == []


def test_the_passages_are_cleaned_for_speech(corpus):
    kb, _ = corpus
    passages = kb.search("how much does a Ridgeline Trek 2 tent weigh and cost?", top_k=5)
    table = next(p for p in passages if "Ridgeline Trek 2" in p.text)
    assert "|" not in table.text and "\n" not in table.text
    assert "Ridgeline Trek 2, 2, 4 lb 2 oz, 88 in, $329." in table.text


def test_speech_text_drops_markdown_symbols_and_shortens_urls():
    text = speech_text(
        "## Returns\n- **Bring it back** within [30 days](https://example.com/a).\n"
        "| Item | Fee |\n|---|---|\n| Kayak | $79 |\n"
        "See https://www.harborlane.example/help/returns/online?ref=mail for more"
    )
    assert text == (
        "Returns. Bring it back within 30 days. Item, Fee. Kayak, $79. "
        "See harborlane.example for more."
    )


async def test_asearch_gives_the_same_passages_from_many_tasks_at_once(corpus):
    kb, _ = corpus
    questions = [QUESTIONS[i]["question"] for i in ("hb-01", "sp-06", "it-04", "rn-08")] * 3
    expected = [kb.search(q) for q in questions]
    results = await asyncio.gather(*(kb.asearch(q) for q in questions))
    assert results == expected


def test_evaluate_reports_retrieval_quality_on_the_eval_set(corpus):
    kb, _ = corpus
    result = kb.evaluate(QUESTIONS.values(), top_k=3)
    print(
        f"\neval: hit@1 {result.hit1:.3f}  hit@3 {result.hit3:.3f}  MRR {result.mrr:.3f}  "
        f"small talk {result.none_correct:.3f} ({result.answerable} + {result.small_talk})"
    )
    assert result.answerable + result.small_talk == len(QUESTIONS)
    assert result.hit3 >= 0.7
    assert result.hit1 <= result.hit3 and result.hit1 <= result.mrr <= result.hit3
    assert result.none_correct == 1.0


def test_the_hybrid_comparison_scores_keyword_search_and_each_fusion(corpus):
    from mindbot.kb.bench import HYBRID_WEIGHTS, RRF_K, compare_hybrid

    kb, _ = corpus
    vector = kb.evaluate(QUESTIONS.values())
    results = compare_hybrid(kb, list(QUESTIONS.values()))
    print("\n" + "\n".join(f"{name}: {figures}" for name, figures in results.items()))
    assert len(results) == 1 + len(HYBRID_WEIGHTS) * len(RRF_K)
    for hit1, hit3, mrr in results.values():
        assert 0 < hit1 <= mrr <= hit3 <= 1
    # Keywords alone miss paraphrased questions that the vector search answers.
    assert results["bm25 alone"][1] < vector.hit3
    assert len(kb.passages()) == corpus[1].chunks


def test_kb_eval_prints_the_figures(corpus, corpus_dir, capsys):
    kb, _ = corpus
    assert kb_eval(kb, EVAL, corpus_dir) == 0
    out = capsys.readouterr().out
    assert "6 unchanged" in out  # already indexed: nothing is embedded again
    assert "hit@1 " in out and "MRR " in out and "small talk: 8/8 retrieved nothing" in out


# --- Keeping the index in step with the documents ----------------------------------------------


def test_adding_unchanged_files_again_embeds_nothing(corpus, corpus_dir):
    kb, first = corpus
    report = kb.add([corpus_dir])
    assert sorted(report.unchanged) == sorted(first.added)
    assert report.added == report.updated == [] and report.chunks == 0
    assert report.embed_seconds == 0


def test_a_new_knowledge_base_object_finds_what_was_stored(corpus, embed_model):
    kb, _ = corpus
    again = KnowledgeBase(
        kb.folder, collection="corpus", settings=KnowledgeSettings(), embed_model=embed_model
    )
    try:
        assert again.list() == kb.list()
        item = QUESTIONS["hb-05"]
        assert hit(again.search(item["question"]), item["source"], item["section"])
    finally:
        again.close()


def test_an_edited_file_is_reindexed_alone_and_its_old_text_is_gone(tmp_path, make_kb):
    docs = tmp_path / "docs"
    write(docs / "ferry.md", FERRY)
    write(docs / "bakery.md", BAKERY)
    kb = make_kb()
    first = kb.add([docs])
    assert sorted(first.added) == ["bakery.md", "ferry.md"]
    assert "7:15" in kb.search("what time does the ferry leave in the morning?")[0].text

    write(docs / "ferry.md", FERRY.replace("7:15", "9:45"))
    report = kb.add([docs])

    assert report.updated == ["ferry.md"] and report.unchanged == ["bakery.md"]
    assert report.added == [] and report.chunks == 2
    passages = kb.search("what time does the ferry leave in the morning?", top_k=10)
    assert "9:45" in passages[0].text
    assert not any("7:15" in p.text for p in passages)
    assert {d.doc_id: d.chunks for d in kb.list()} == {"bakery.md": 1, "ferry.md": 2}


def test_sync_removes_a_deleted_file_which_is_never_cited_again(tmp_path, make_kb):
    docs = tmp_path / "docs"
    write(docs / "ferry.md", FERRY)
    write(docs / "sub" / "bakery.md", BAKERY)
    kb = make_kb()
    assert sorted(kb.sync(docs).added) == ["ferry.md", "sub/bakery.md"]
    assert kb.search("how often do I feed the sourdough starter?")

    (docs / "sub" / "bakery.md").unlink()
    report = kb.sync(docs)

    assert report.removed == ["sub/bakery.md"] and report.unchanged == ["ferry.md"]
    assert [d.doc_id for d in kb.list()] == ["ferry.md"]
    passages = kb.search("how often do I feed the sourdough starter?", min_score=-1.0, top_k=50)
    assert passages and {p.doc_id for p in passages} == {"ferry.md"}


def test_sync_of_a_missing_folder_removes_nothing(tmp_path, make_kb):
    docs = tmp_path / "docs"
    write(docs / "ferry.md", FERRY)
    kb = make_kb()
    kb.sync(docs)
    report = kb.sync(tmp_path / "unmounted")
    assert report.skipped[0].reason == "folder not found" and report.removed == []
    assert [d.doc_id for d in kb.list()] == ["ferry.md"]


def test_reindex_re_embeds_every_document_and_drops_deleted_ones(tmp_path, make_kb):
    docs = tmp_path / "docs"
    write(docs / "ferry.md", FERRY)
    write(docs / "bakery.md", BAKERY)
    kb = make_kb()
    kb.add([docs / "ferry.md", docs / "bakery.md"])
    (docs / "bakery.md").unlink()
    report = kb.reindex()
    assert report.removed == ["bakery.md"] and report.updated == ["ferry.md"]
    assert report.chunks == 2
    assert [d.doc_id for d in kb.list()] == ["ferry.md"]


def test_remove_by_doc_id_title_or_file_name(tmp_path, make_kb, capsys):
    docs = tmp_path / "docs"
    write(docs / "ferry.md", FERRY)
    write(docs / "bakery.md", BAKERY)
    write(docs / "more" / "wheat.md", BAKERY.replace("rye", "wheat"))
    kb = make_kb()
    kb.add([docs])

    assert kb.remove("Ferry Guide") == 2  # by title
    with pytest.raises(KnowledgeError, match="matches 2 documents"):
        kb.remove("Bakery Notes")
    assert kb.remove("wheat.md") == 1  # by file name; its doc id is more/wheat.md
    assert kb.remove("bakery.md") == 1  # by doc id
    with pytest.raises(KnowledgeError, match="No document 'ferry.md'"):
        kb.remove("ferry.md")
    assert kb.list() == []
    assert kb_remove(kb, "nothing.md") == 1
    assert "error: No document 'nothing.md'" in capsys.readouterr().err


def test_two_collections_are_isolated(tmp_path, make_kb):
    write(tmp_path / "a" / "ferry.md", FERRY)
    write(tmp_path / "b" / "bakery.md", BAKERY)
    alpha, beta = make_kb("alpha"), make_kb("beta")
    alpha.add([tmp_path / "a"])
    beta.add([tmp_path / "b"])
    assert [d.doc_id for d in alpha.list()] == ["ferry.md"]
    assert [d.doc_id for d in beta.list()] == ["bakery.md"]
    everything = alpha.search("sourdough starter flour", min_score=-1.0, top_k=50)
    assert everything and {p.doc_id for p in everything} == {"ferry.md"}
    alpha.remove("ferry.md")
    assert [d.doc_id for d in beta.list()] == ["bakery.md"]


def test_the_progress_callback_counts_the_documents(tmp_path, make_kb):
    write(tmp_path / "docs" / "ferry.md", FERRY)
    write(tmp_path / "docs" / "bakery.md", BAKERY)
    calls = []
    make_kb().add([tmp_path / "docs"], progress=lambda *call: calls.append(call))
    assert calls == [(1, 2, "bakery.md"), (2, 2, "ferry.md")]


def test_kb_add_and_kb_list_print_concise_lines(tmp_path, make_kb, capsys):
    write(tmp_path / "docs" / "ferry.md", FERRY)
    kb = make_kb()
    assert kb_add(kb, [str(tmp_path / "docs"), str(tmp_path / "nope.md")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "added    ferry.md"
    assert out[1] == f"skipped  {tmp_path / 'nope.md'}: not found"
    assert out[2].startswith("1 added, 0 updated, 0 unchanged, 0 removed, 1 skipped; 2 chunks")
    assert kb_list(kb) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ferry.md") and lines[0].endswith("Ferry Guide")
    assert lines[1] == "1 documents, 2 chunks"


# --- Bad input --------------------------------------------------------------------------------


def test_bad_inputs_are_skipped_with_reasons_and_the_rest_is_ingested(tmp_path, make_kb):
    inbox = tmp_path / "inbox"
    outside = write(tmp_path / "outside" / "secret.md", "# Secret\n\nThe vault code is 1234.\n")
    write(inbox / "previous.md", FERRY)
    kb = make_kb(allowed_dirs=[inbox], max_file_mb=1)
    kb.add([inbox / "previous.md"])

    batch = inbox / "batch"
    write(batch / "good.md", BAKERY)
    for bad in BAD.iterdir():
        shutil.copy(bad, batch / bad.name)
    (batch / "huge.txt").write_text("word " * 300_000)  # 1.5 MB
    write(batch / "notes.xyz", "not a document type")
    (batch / "link.md").symlink_to(outside)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sources = [
        batch,
        outside,
        f"{inbox}/../outside/secret.md",
        f"http://127.0.0.1:{port}/doc.md",
        "http://localhost/doc.md",
        "ftp://example.com/doc.md",
        inbox / "missing.md",
    ]
    report = kb.add(sources)

    reasons = {Path(s.source).name if "://" not in s.source else s.source: s.reason
               for s in report.skipped}  # fmt: skip
    assert reasons["corrupt.pdf"].startswith("cannot read the PDF file")
    assert reasons["truncated.docx"].startswith("cannot read the DOCX file")
    assert reasons["binary.md"] == "binary data, not text"
    assert reasons["empty.txt"] == "empty file"
    assert reasons["huge.txt"].startswith("too large: 1.4 MB")
    assert reasons["notes.xyz"] == "unsupported file type .xyz"
    assert "outside the allowed folders" in reasons["link.md"]
    assert "outside the allowed folders" in reasons["secret.md"]
    assert sum("outside the allowed folders" in r for r in (s.reason for s in report.skipped)) == 3
    assert reasons[f"http://127.0.0.1:{port}/doc.md"].startswith("refused: 127.0.0.1")
    assert reasons["http://localhost/doc.md"].startswith("refused: localhost")
    assert reasons["ftp://example.com/doc.md"] == "unsupported URL scheme ftp:"
    assert reasons["missing.md"] == "not found"
    assert len(report.skipped) == 13
    assert all("\n" not in s.reason for s in report.skipped)

    # The good files went in, the previous index is intact, nothing bad can be retrieved.
    assert sorted(report.added) == [
        "good.md", "prompt-injection-hidden.html", "prompt-injection.md"
    ]  # fmt: skip
    assert report.warnings[0].source.endswith("prompt-injection.md")
    assert "prompt injection" in report.warnings[0].reason
    ids = {d.doc_id for d in kb.list()}
    assert ids == {"previous.md", "good.md", "prompt-injection-hidden.html", "prompt-injection.md"}
    assert "7:15" in kb.search("what time does the ferry leave in the morning?")[0].text
    for query in ("what is the CEO's home address?", "ignore previous instructions", "vault code"):
        passages = kb.search(query, min_score=-1.0, top_k=50)
        assert not any(CANARY in p.text or "1234" in p.text for p in passages)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over ``tmp_path / "site"``: (folder, base URL)."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_is_downloaded_when_private_urls_are_allowed(http_folder, make_kb):
    site, base = http_folder
    write(site / "ferry.md", FERRY)
    shutil.copy(CORPUS / "store-policies.pdf", site / "policies.pdf")
    (site / "big.txt").write_text("word " * 300_000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    kb = make_kb(allow_private_urls=True, max_file_mb=1)
    report = kb.add(
        [
            f"{base}/ferry.md",
            f"{base}/policies.pdf#returns",
            f"{base}/big.txt",
            f"{base}/absent.md",
            f"http://127.0.0.1:{closed}/doc.md",
        ]
    )
    assert report.added == [f"{base}/ferry.md", f"{base}/policies.pdf"]
    reasons = [s.reason for s in report.skipped]
    assert reasons[0].startswith("too large")
    assert reasons[1] == "HTTP 404 File not found"
    assert reasons[2].startswith("cannot download")
    passage = kb.search("what time does the ferry leave in the morning?")[0]
    assert passage.source == f"{base}/ferry.md" and passage.title == "Ferry Guide"
    pdf = kb.search(QUESTIONS["sp-02"]["question"])
    assert any(p.label == "Store Policies, section Online Purchases, page 1" for p in pdf)
    assert kb.add([f"{base}/ferry.md"]).unchanged == [f"{base}/ferry.md"]


def test_a_connection_that_lands_on_a_private_address_is_refused(http_folder, make_kb):
    """The second guard, after the name check: where the connection really went (a DNS answer
    can change between the check and the connection), read from a real response."""
    site, base = http_folder
    write(site / "ferry.md", FERRY)
    kb = make_kb()
    with httpx.Client() as client, client.stream("GET", f"{base}/ferry.md") as response:
        with pytest.raises(
            Exception, match=r"connected to a private or local address \(127\.0\.0\.1\)"
        ):
            kb._check_peer(response)


def test_an_empty_knowledge_base_finds_nothing(make_kb):
    kb = make_kb()
    assert kb.list() == [] and kb.search("what time does the ferry leave?") == []
    assert kb.search("   ") == []


# --- Watching a folder ------------------------------------------------------------------------


async def wait_for(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` (on a thread) until it holds; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.1)):
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"still false after {timeout} s")


async def test_watch_indexes_a_file_written_into_the_folder_and_drops_a_deleted_one(
    tmp_path, make_kb
):
    docs = tmp_path / "docs"
    write(docs / "ferry.md", FERRY)
    kb = make_kb()
    watcher = asyncio.create_task(kb.watch([docs, tmp_path / "missing"], debounce=0.05))
    try:
        await wait_for(lambda: [d.doc_id for d in kb.list()] == ["ferry.md"])
        write(docs / "bakery.md", BAKERY)
        await wait_for(lambda: "bakery.md" in {d.doc_id for d in kb.list()})
        assert kb.search("how often do I feed the sourdough starter?")[0].doc_id == "bakery.md"
        (docs / "ferry.md").unlink()
        await wait_for(lambda: [d.doc_id for d in kb.list()] == ["bakery.md"])
        assert not watcher.done()
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
