"""The knowledge-base test corpus and its evaluation set are what they claim to be.

Every corpus file parses with the reader MindBot uses for its format, the corpus is long enough,
every evaluation question points at a section that exists and whose text holds the expected
answer, the bad inputs are bad in the way their names say, and ``make_corpus.py`` reproduces the
generated files byte for byte.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import docx2txt
import pypdf
import pytest
import yaml

KB = Path(__file__).parent / "fixtures" / "kb"
CORPUS = KB / "corpus"
BAD = KB / "bad"
EVAL = KB / "eval.yaml"
GENERATOR = KB / "make_corpus.py"

WORDS_PER_PAGE = 400
MIN_PAGES = 30
MIN_ANSWERABLE = 60
FORMATS = {".md", ".html", ".pdf", ".docx", ".txt"}
INJECTION = "ignore previous instructions"
CANARY = "4471 Kestrel Point Road"

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_STYLES = {"Title", "Heading1", "Heading2", "Heading3"}
_HTML_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_PUNCTUATION = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-"}


@dataclass
class Section:
    """A heading and the text under it, up to the next heading of any level."""

    heading: str
    text: str


def normalize(text: str) -> str:
    """Case-folded, NFKC, typographic quotes and dashes made plain, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    for fancy, plain in _PUNCTUATION.items():
        text = text.replace(fancy, plain)
    return " ".join(text.replace("**", "").split()).casefold()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", normalize(text))


# --------------------------------------------------------------------------- readers


class _HTMLSections(HTMLParser):
    """Splits an HTML page into sections at h1-h6, leaving out scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = [Section("", "")]
        self._heading: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _HTML_HEADINGS:
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag in _HTML_HEADINGS and self._heading is not None:
            self.sections.append(Section(" ".join("".join(self._heading).split()), ""))
            self._heading = None

    def handle_data(self, data):
        if self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self.sections[-1].text += data + " "


def _markdown_sections(text: str) -> list[Section]:
    sections = [Section("", "")]
    for line in text.splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            sections.append(Section(match.group(1), ""))
        else:
            sections[-1].text += line + "\n"
    return sections


def _setext_sections(text: str) -> list[Section]:
    """Plain text whose headings are underlined with ``===`` or ``---``."""
    lines = text.splitlines()
    sections = [Section("", "")]
    index = 0
    while index < len(lines):
        line = lines[index]
        underline = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"={3,}|-{3,}", underline.strip()):
            sections.append(Section(line.strip(), ""))
            index += 2
            continue
        sections[-1].text += line + "\n"
        index += 1
    return sections


def _pdf_sections(path: Path) -> list[Section]:
    """Headings are the runs set in Helvetica-Bold at 12 pt or more."""
    sections = [Section("", "")]

    def visit(text, _cm, _tm, font, size):
        if not text.strip():
            return
        base_font = str(font.get("/BaseFont", "")) if font else ""
        if base_font == "/Helvetica-Bold" and size >= 12:
            sections.append(Section(text.strip(), ""))
        else:
            sections[-1].text += text + " "

    for page in pypdf.PdfReader(path).pages:
        page.extract_text(visitor_text=visit)
    return sections


def _docx_sections(path: Path) -> list[Section]:
    """Headings are paragraphs styled Title or HeadingN; tables belong to their section."""
    with zipfile.ZipFile(path) as archive:
        body = ElementTree.fromstring(archive.read("word/document.xml")).find(f"{_W}body")
    assert body is not None
    sections = [Section("", "")]
    for element in body:
        text = "".join(t.text or "" for t in element.iter(f"{_W}t"))
        if element.tag == f"{_W}tbl":
            cells = (
                "".join(t.text or "" for t in cell.iter(f"{_W}t"))
                for cell in element.iter(f"{_W}tc")
            )
            sections[-1].text += " ".join(cells) + "\n"
        elif element.tag == f"{_W}p":
            style = element.find(f"{_W}pPr/{_W}pStyle")
            if style is not None and style.get(f"{_W}val") in _HEADING_STYLES:
                sections.append(Section(text, ""))
            else:
                sections[-1].text += text + "\n"
    return sections


@cache
def document_text(name: str) -> str:
    """The text of a corpus file, as the reader MindBot uses for its format returns it."""
    path = CORPUS / name
    if path.suffix == ".pdf":
        return "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)
    if path.suffix == ".docx":
        return docx2txt.process(str(path))
    if path.suffix == ".html":
        parser = _HTMLSections()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        return "\n".join(f"{s.heading}\n{s.text}" for s in parser.sections)
    return path.read_text(encoding="utf-8")


@cache
def document_sections(name: str) -> tuple[Section, ...]:
    """The sections of a corpus file, split at its headings."""
    path = CORPUS / name
    if path.suffix == ".pdf":
        sections = _pdf_sections(path)
    elif path.suffix == ".docx":
        sections = _docx_sections(path)
    elif path.suffix == ".html":
        parser = _HTMLSections()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        sections = parser.sections
    elif path.suffix == ".md":
        sections = _markdown_sections(path.read_text(encoding="utf-8"))
    else:
        sections = _setext_sections(path.read_text(encoding="utf-8"))
    return tuple(s for s in sections if s.heading)


def corpus_files() -> list[str]:
    """The names of the corpus files, sorted."""
    return sorted(p.name for p in CORPUS.iterdir() if p.is_file())


# --------------------------------------------------------------------------- the corpus


def test_the_corpus_has_every_format():
    assert {Path(name).suffix for name in corpus_files()} >= FORMATS


@pytest.mark.parametrize("name", corpus_files())
def test_each_document_parses_into_sections(name):
    text = document_text(name)
    sections = document_sections(name)
    assert len(_words(text)) >= 1000, f"{name} is too short to be a real document"
    assert len(sections) >= 10, [s.heading for s in sections]
    for section in sections:
        assert normalize(section.heading) in normalize(text), f"{section.heading!r} not read"


def test_the_corpus_is_at_least_thirty_pages_long():
    total = sum(len(_words(document_text(name))) for name in corpus_files())
    assert total >= MIN_PAGES * WORDS_PER_PAGE, total


def test_the_pdf_is_a_valid_multi_page_file_with_extractable_text():
    reader = pypdf.PdfReader(CORPUS / "store-policies.pdf", strict=True)
    assert len(reader.pages) >= 5
    assert reader.metadata is not None and reader.metadata.title == "Store Policies"
    last_page = reader.pages[-1].extract_text()
    assert f"Page {len(reader.pages)} of {len(reader.pages)}" in last_page
    # Parentheses are escaped in the text streams and come back intact.
    assert "12 p.m. (noon) Pacific time" in document_text("store-policies.pdf")


def test_the_docx_marks_its_headings_with_heading_styles():
    path = CORPUS / "it-security-guide.docx"
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        document = archive.read("word/document.xml").decode()
        styles = archive.read("word/styles.xml").decode()
    for style in ("Heading1", "Heading2"):
        assert f'w:styleId="{style}"' in styles
        assert document.count(f'<w:pStyle w:val="{style}"/>') >= 5
    assert "<w:tbl>" in document
    assert normalize("Data Classification") in normalize(docx2txt.process(str(path)))


def test_every_part_of_the_docx_is_well_formed_xml():
    with zipfile.ZipFile(CORPUS / "it-security-guide.docx") as archive:
        names = archive.namelist()
        for name in names:
            ElementTree.fromstring(archive.read(name))
    assert {"[Content_Types].xml", "_rels/.rels", "word/document.xml"} <= set(names)


@pytest.mark.parametrize(
    ("fact", "documents"),
    [
        ("70 cents per mile", ["employee-handbook.md", "travel-policy.md"]),
        ("within 5 business days", ["employee-handbook.md", "it-security-guide.docx"]),
        ("10 business days before", ["travel-policy.md", "it-security-guide.docx"]),
        ("1-800-555-0142", ["product-faq.html", "store-policies.pdf", "release-notes.txt"]),
        ("up to 72 hours", ["product-faq.html", "release-notes.txt"]),
        ("$14.99 a month", ["product-faq.html", "release-notes.txt"]),
        ("2-year warranty", ["release-notes.txt"]),
        ("warranted for 2 years from the date of purchase", ["store-policies.pdf"]),
        ("$200 hold", ["product-faq.html", "store-policies.pdf"]),
        ("$75 or more", ["store-policies.pdf"]),
        ("Report Phish", ["employee-handbook.md", "it-security-guide.docx"]),
    ],
)
def test_facts_shared_by_several_documents_agree(fact, documents):
    for name in documents:
        assert normalize(fact) in normalize(document_text(name)), f"{fact!r} not in {name}"


def test_the_html_faq_has_sections_tables_and_lists():
    source = (CORPUS / "product-faq.html").read_text(encoding="utf-8")
    headings = [s.heading for s in document_sections("product-faq.html")]
    assert sum(h.endswith("?") for h in headings) >= 20  # the h3 questions
    assert source.count("<table>") >= 4 and source.count("<ul>") >= 2
    assert "dataLayer" not in document_text("product-faq.html")  # scripts are not text


# --------------------------------------------------------------------------- the evaluation set


@cache
def load_eval() -> dict:
    """The parsed eval.yaml."""
    return yaml.safe_load(EVAL.read_text(encoding="utf-8"))


def answerable() -> list[dict]:
    """Evaluation items that have an answer in the corpus."""
    return [item for item in load_eval()["questions"] if item.get("expected") != "none"]


def out_of_scope() -> list[dict]:
    """Evaluation items that nothing in the corpus answers."""
    return [item for item in load_eval()["questions"] if item.get("expected") == "none"]


def test_the_eval_set_is_large_enough_and_well_formed():
    items = load_eval()["questions"]
    assert len(answerable()) >= MIN_ANSWERABLE
    assert 6 <= len(out_of_scope()) <= 12
    ids = Counter(item["id"] for item in items)
    questions = Counter(normalize(item["question"]) for item in items)
    assert ids.most_common(1)[0][1] == 1, ids.most_common(3)
    assert questions.most_common(1)[0][1] == 1, questions.most_common(3)
    for item in answerable():
        assert set(item) == {"id", "question", "source", "section", "answer"}, item
        assert all(isinstance(item[key], str) and item[key].strip() for key in item), item
    for item in out_of_scope():
        assert set(item) == {"id", "question", "expected"}, item


def test_the_eval_set_covers_every_document():
    per_source = Counter(item["source"] for item in answerable())
    assert set(per_source) == set(corpus_files())
    assert min(per_source.values()) >= 5, per_source


@pytest.mark.parametrize("item", answerable(), ids=lambda item: item["id"])
def test_each_expected_answer_is_in_its_section(item):
    assert (CORPUS / item["source"]).is_file(), item["source"]
    sections = [
        s
        for s in document_sections(item["source"])
        if normalize(s.heading) == normalize(item["section"])
    ]
    assert len(sections) == 1, f"heading {item['section']!r} found {len(sections)} times"
    answer = normalize(item["answer"])
    assert answer in normalize(sections[0].text), f"{item['answer']!r} not under the heading"
    assert answer in normalize(document_text(item["source"])), "the reader loses the answer"


@pytest.mark.parametrize("item", answerable(), ids=lambda item: item["id"])
def test_each_question_is_worded_as_a_caller_would_say_it(item):
    question = re.sub(r"[^a-z0-9 ]", "", normalize(item["question"]))
    heading = re.sub(r"[^a-z0-9 ]", "", normalize(item["section"]))
    assert question != heading
    assert normalize(item["question"]).rstrip("?") not in normalize(document_text(item["source"]))


@pytest.mark.parametrize("item", out_of_scope(), ids=lambda item: item["id"])
def test_an_out_of_scope_utterance_names_nothing_from_the_corpus(item):
    names = {"harbor", "lane", "ridgeline", "tidewater", "emberlite", "summit", "trailsync"}
    assert not names & set(_words(item["question"]))


# --------------------------------------------------------------------------- bad inputs


def test_the_corrupt_pdf_is_refused_by_pypdf():
    with pytest.raises(pypdf.errors.PdfReadError):
        reader = pypdf.PdfReader(BAD / "corrupt.pdf")
        for page in reader.pages:
            page.extract_text()


def test_the_truncated_docx_is_refused_by_docx2txt():
    with pytest.raises(zipfile.BadZipFile):
        docx2txt.process(str(BAD / "truncated.docx"))


def test_the_binary_markdown_file_is_not_text():
    data = (BAD / "binary.md").read_bytes()
    assert b"\x00" in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_the_empty_file_is_empty():
    assert (BAD / "empty.txt").read_bytes() == b""


@pytest.mark.parametrize("name", ["prompt-injection.md", "prompt-injection-hidden.html"])
def test_the_injection_documents_carry_the_attack_and_its_canary(name):
    text = normalize((BAD / name).read_text(encoding="utf-8"))
    assert INJECTION in text
    assert normalize(CANARY) in text
    assert normalize(CANARY) not in normalize(" ".join(map(document_text, corpus_files())))


def test_nothing_in_bad_is_large():
    assert max(p.stat().st_size for p in BAD.iterdir()) < 64 * 1024


# --------------------------------------------------------------------------- the generator


def test_the_generator_reproduces_the_committed_files(tmp_path):
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(result.stdout.split())
    generated_suffixes = {".pdf", ".docx"}
    expected = sorted(
        [f"corpus/{n}" for n in corpus_files() if Path(n).suffix in generated_suffixes]
        + [f"bad/{p.name}" for p in BAD.iterdir()]
    )
    assert made == expected
    for name in made:
        assert (tmp_path / name).read_bytes() == (KB / name).read_bytes(), f"{name} differs"


def test_the_generated_docx_is_a_plain_zip_with_fixed_timestamps():
    with zipfile.ZipFile(io.BytesIO((CORPUS / "it-security-guide.docx").read_bytes())) as archive:
        infos = archive.infolist()
    assert infos[0].filename == "[Content_Types].xml"
    assert {info.date_time for info in infos} == {(2025, 3, 1, 9, 0, 0)}
