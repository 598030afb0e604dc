"""What the ``mindbot kb ...`` commands do, for the CLI to call with its parsed options.

Each function takes an open ``KnowledgeBase`` and the command's arguments, prints a few concise
lines (results on ``out``, progress and errors on ``err``) and returns the exit status: 0 when
everything worked, 1 when something was skipped or not found. They never raise for bad input.

    mindbot kb add PATH|URL...        kb_add(kb, sources)
    mindbot kb list                   kb_list(kb)
    mindbot kb remove DOC             kb_remove(kb, doc)
    mindbot kb reindex                kb_reindex(kb)
    mindbot kb search QUERY           kb_search(kb, query)
    mindbot kb eval EVAL.yaml DIR     kb_eval(kb, eval_file, corpus_dir)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from mindbot.kb.knowledge import IngestReport, KnowledgeBase, KnowledgeError, load_eval_items

_BAR_WIDTH = 24


def kb_add(
    kb: KnowledgeBase,
    sources: Sequence[str | Path],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Ingest files, folders and URLs, with a progress bar on ``err`` when it is a terminal.

    Args:
        kb: The knowledge base.
        sources: Paths (files or folders, recursive) and http(s) URLs, as typed.
        out: Where results go; default stdout.
        err: Where the progress bar goes; default stderr.

    Returns:
        0 if every source was ingested (or unchanged), 1 if any was skipped.
    """
    out = out or sys.stdout
    with _ProgressBar(err or sys.stderr) as progress:
        report = kb.add(sources, progress=progress)
    _print_report(report, out)
    return 1 if report.skipped else 0


def kb_list(kb: KnowledgeBase, *, out: TextIO | None = None) -> int:
    """Print one line per document: doc id, chunks, date added, title.

    Args:
        kb: The knowledge base.
        out: Where to print; default stdout.

    Returns:
        0.
    """
    out = out or sys.stdout
    documents = kb.list()
    if not documents:
        print(
            f"Knowledge base {kb.collection!r} is empty: add documents with `mindbot kb add`",
            file=out,
        )
        return 0
    width = min(40, max(len(d.doc_id) for d in documents))
    for d in documents:
        print(
            f"{d.doc_id:<{width}}  {d.chunks:>5} chunks  {d.added_at:%Y-%m-%d}  {d.title}",
            file=out,
        )
    total = sum(d.chunks for d in documents)
    print(f"{len(documents)} documents, {total} chunks", file=out)
    return 0


def kb_remove(
    kb: KnowledgeBase, doc: str, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Remove a document named by doc id, title or file name.

    Args:
        kb: The knowledge base.
        doc: The doc id, title, file name, path or URL (as ``kb list`` shows them).
        out: Where the result goes; default stdout.
        err: Where an error goes; default stderr.

    Returns:
        0 if removed, 1 if no document (or several) match.
    """
    try:
        chunks = kb.remove(doc)
    except KnowledgeError as e:
        print(f"error: {e}", file=err or sys.stderr)
        return 1
    print(f"Removed {doc} ({chunks} chunks)", file=out or sys.stdout)
    return 0


def kb_reindex(kb: KnowledgeBase, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Re-read and re-embed every document; those whose file is gone are removed.

    Args:
        kb: The knowledge base.
        out: Where results go; default stdout.
        err: Where the progress bar goes; default stderr.

    Returns:
        0, or 1 if a document could not be read again (it keeps its passages).
    """
    with _ProgressBar(err or sys.stderr) as progress:
        report = kb.reindex(progress=progress)
    _print_report(report, out or sys.stdout)
    return 1 if report.skipped else 0


def kb_search(
    kb: KnowledgeBase,
    query: str,
    *,
    top_k: int | None = None,
    min_score: float | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the passages a query retrieves, as a call would get them.

    Args:
        kb: The knowledge base.
        query: The question.
        top_k: Passages at most; default ``kb.top_k``.
        min_score: Relevance threshold; default ``kb.min_score``.
        out: Where to print; default stdout.

    Returns:
        0 if something was found, 1 if nothing was.
    """
    out = out or sys.stdout
    passages = kb.search(query, top_k=top_k, min_score=min_score)
    if not passages:
        print("Nothing relevant found.", file=out)
        return 1
    for rank, passage in enumerate(passages, start=1):
        print(f"{rank}. [{passage.score:.2f}] {passage.label}", file=out)
        print(f"   {_shorten(passage.text, 300)}", file=out)
    return 0


def kb_eval(
    kb: KnowledgeBase,
    eval_file: Path,
    corpus_dir: Path,
    *,
    top_k: int = 3,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Index a corpus and print retrieval quality: hit@1, hit@3, MRR and small talk.

    The knowledge base is synced to ``corpus_dir`` first (so pass one kept for evaluation,
    e.g. a ``--collection eval``: documents outside that folder would count as distractors).

    Args:
        kb: The knowledge base to evaluate in.
        eval_file: The questions (``tests/fixtures/kb/eval.yaml``'s format).
        corpus_dir: The folder of the documents the questions are about.
        top_k: Passages per question (3 or more for hit@3 to mean what it says).
        out: Where results go; default stdout.
        err: Where progress and errors go; default stderr.

    Returns:
        0, or 1 if the evaluation file cannot be read.
    """
    out, err = out or sys.stdout, err or sys.stderr
    try:
        items = load_eval_items(eval_file)
    except KnowledgeError as e:
        print(f"error: {e}", file=err)
        return 1
    with _ProgressBar(err) as progress:
        report = kb.sync(corpus_dir, progress=progress)
    print(f"Corpus {corpus_dir}: {report.summary()}", file=out)
    for skipped in report.skipped:
        print(f"  skipped {skipped.source}: {skipped.reason}", file=out)
    result = kb.evaluate(items, top_k=top_k)
    print(
        f"hit@1 {result.hit1:.3f}  hit@3 {result.hit3:.3f}  MRR {result.mrr:.3f}  "
        f"({result.answerable} questions, min score {kb.settings.min_score:g})",
        file=out,
    )
    silent = sum(1 for q in result.per_question if not q.expected_source and not q.labels)
    print(
        f"small talk: {silent}/{result.small_talk} retrieved nothing ({result.none_correct:.0%})",
        file=out,
    )
    for q in result.per_question:
        if not q.correct:
            got = f"{q.labels[0]} ({q.scores[0]:.2f})" if q.labels else "nothing"
            expected = (
                f"{q.expected_source}, {q.expected_section}" if q.expected_source else "nothing"
            )
            print(f"  miss {q.id}: expected {expected}; first: {got}", file=out)
    return 0


# --- Printing ---------------------------------------------------------------------------------


def _print_report(report: IngestReport, out: TextIO) -> None:
    for doc_id in report.added:
        print(f"added    {doc_id}", file=out)
    for doc_id in report.updated:
        print(f"updated  {doc_id}", file=out)
    for doc_id in report.removed:
        print(f"removed  {doc_id}", file=out)
    for skipped in report.skipped:
        print(f"skipped  {skipped.source}: {skipped.reason}", file=out)
    for warning in report.warnings:
        print(f"warning  {warning.source}: {warning.reason}", file=out)
    print(report.summary()[0].upper() + report.summary()[1:], file=out)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class _ProgressBar:
    """A progress callback for ``KnowledgeBase.add``, drawing a bar on a terminal only.

    tqdm draws it when installed (it comes with huggingface_hub); otherwise a plain text bar.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar = None
        self._drawn = False

    def __enter__(self) -> Callable[[int, int, str], None] | None:
        return self.update if self._tty else None

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def update(self, done: int, total: int, name: str) -> None:
        if total < 2:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            filled = _BAR_WIDTH * done // total
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {done}/{total} {_shorten(name, 40):<40}")
            self._stream.flush()
            self._drawn = True
            return
        if self._bar is None:
            self._bar = tqdm(total=total, file=self._stream, unit="doc", leave=False)
        self._bar.set_postfix_str(_shorten(name, 40), refresh=False)
        self._bar.update(done - self._bar.n)
