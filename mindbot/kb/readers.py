"""Document readers that keep the structure retrieval needs: sections, headings and PDF pages.

``parse_document(data, suffix)`` turns the bytes of a Markdown, plain-text, HTML, PDF or DOCX
document into a ``ParsedDocument``: its own title (if it names one) and its sections, each the
text under one heading (with the headings above it and, for a PDF, the page it is on).
``SectionReader`` wraps it as a LlamaIndex ``BaseReader`` (one ``Document`` per section), so it
also works as a ``SimpleDirectoryReader`` file extractor.

Why not LlamaIndex's own readers: ``llama-index-core`` ships none for these formats (they are in
``llama-index-readers-file``, not installed), its ``HTMLNodeParser`` needs beautifulsoup4, and the
readers of that package lose what a section needs: its ``DocxReader`` returns ``docx2txt``'s
plain text (paragraph styles, so headings, are gone) and its ``PDFReader`` one document per page
with no headings. So:

- Markdown: ATX (``#``) and setext (underlined) headings, outside code fences; HTML comments
  (invisible when rendered) are dropped.
- Plain text: setext headings (a line underlined with ``===`` or ``---``).
- HTML: the standard library's ``html.parser``; h1-h6 are headings, table cells are joined with
  `` | ``; scripts, styles, navigation, comments and hidden elements (``hidden``,
  ``aria-hidden``, ``display:none``, ``visibility:hidden``) are left out, since a caller's
  browser would not show them either.
- PDF: ``pypdf``'s text with each run's font: a short line set in a bold font, or larger than
  the body text, is a heading (bigger means higher); lines repeated on most pages (running
  headers, footers, page numbers) are dropped.
- DOCX: ``word/document.xml`` read with ``zipfile`` and ElementTree, as ``docx2txt`` does, but
  keeping paragraph styles: ``Title`` and ``Heading N`` (or any style with an outline level)
  are headings; lists and tables are kept; hidden runs (``w:vanish``) are left out.

Every failure is a ``ReadError`` with a one-line reason.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from mindbot.errors import MindBotError

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
SUPPORTED_SUFFIXES = frozenset(
    MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx"}
)
CONTENT_TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/plain": ".txt",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}
"""The suffix whose reader handles a MIME type (for documents fetched from a URL)."""

_MAX_XML_BYTES = 64 * 1024 * 1024  # an uncompressed DOCX part larger than this is refused


class ReadError(MindBotError):
    """A document cannot be read; the message is a one-line reason."""


@dataclass
class Section:
    """The text under one heading, up to the next heading of any level.

    Attributes:
        heading: The nearest heading above the text; empty before the first heading.
        level: The heading's level, 1 for the highest; 0 for text before any heading.
        text: The section's text.
        page: The PDF page (from 1) the text is on; a section across pages is split per page.
        path: The headings from the outermost down to ``heading``.
    """

    heading: str
    level: int
    text: str = ""
    page: int | None = None
    path: tuple[str, ...] = ()


@dataclass
class ParsedDocument:
    """What a reader found in a document.

    Attributes:
        title: The title the document gives itself (first top heading, ``<title>``, PDF or DOCX
            title property), or None.
        sections: The sections that hold text, in document order.
    """

    title: str | None
    sections: list[Section] = field(default_factory=list)


def parse_document(data: bytes, suffix: str) -> ParsedDocument:
    """Read a document's title and sections.

    Args:
        data: The document's bytes.
        suffix: The reader to use, as a lower-case file suffix (``.md``, ``.pdf``...).

    Returns:
        The title and the sections that hold some text.

    Raises:
        ReadError: The type is not supported, the file is empty, binary where text is expected,
            corrupt, encrypted, or holds no text.
    """
    suffix = suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ReadError(f"unsupported file type {suffix or '(none)'}")
    if not data.strip():
        raise ReadError("empty file")
    try:
        if suffix == ".pdf":
            parsed = _read_pdf(data)
        elif suffix == ".docx":
            parsed = _read_docx(data)
        elif suffix in HTML_SUFFIXES:
            parsed = _read_html(decode_text(data))
        elif suffix in MARKDOWN_SUFFIXES:
            parsed = _read_markdown(decode_text(data))
        else:
            parsed = _read_plain_text(decode_text(data))
    except ReadError:
        raise
    except RecursionError as e:
        raise ReadError("the document is nested too deeply to read") from e
    except Exception as e:  # pypdf, zipfile and expat raise many types for corrupt input
        raise ReadError(f"cannot read the {suffix[1:].upper()} file: {_one_line(e)}") from e
    parsed.sections = [s for s in _with_paths(parsed.sections) if s.text.strip()]
    if not parsed.sections:
        kind = "a scanned PDF needs OCR" if suffix == ".pdf" else "nothing but headings"
        raise ReadError(f"no text found ({kind})")
    return parsed


def decode_text(data: bytes) -> str:
    """Text from bytes: UTF-8 (or UTF-16 with a BOM), else Windows-1252.

    Raises:
        ReadError: The data looks binary (NUL bytes or many control characters).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:65536]:
        raise ReadError("binary data, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    sample = text[:65536]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f")
    if controls > max(8, len(sample) // 100):
        raise ReadError("binary data, not text")
    return text


def file_title(name: str) -> str:
    """A file name turned into words: ``employee-handbook.md`` → ``Employee handbook``."""
    words = re.sub(r"[-_.\s]+", " ", Path(name).stem).strip()
    return words[:1].upper() + words[1:] if words else name


class SectionReader(BaseReader):
    """A LlamaIndex reader giving one ``Document`` per section.

    Each document's metadata holds ``title`` (the document's, or its file name in words),
    ``section`` (the nearest heading), ``path`` (the headings above, joined with `` > ``),
    ``page`` (PDF) and ``file_name``.
    """

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        """Read one file.

        Args:
            file: The file.
            extra_info: Metadata added to every document.

        Returns:
            One document per section with text.

        Raises:
            ReadError: As ``parse_document``.
        """
        path = Path(file)
        parsed = parse_document(path.read_bytes(), path.suffix)
        title = parsed.title or file_title(path.name)
        return [
            Document(
                text=section.text,
                metadata={
                    **(extra_info or {}),
                    "file_name": path.name,
                    "title": title,
                    "section": section.heading,
                    "path": " > ".join(section.path),
                    "page": section.page,
                },
            )
            for section in parsed.sections
        ]


# --- Markdown and plain text ------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_TITLE = re.compile(r"^title:[ \t]*['\"]?(.*?)['\"]?[ \t]*$", re.MULTILINE)


def _read_markdown(text: str) -> ParsedDocument:
    title = None
    if match := _FRONT_MATTER.match(text):
        if found := _FRONT_TITLE.search(match.group(1)):
            title = found.group(1).strip() or None
        text = text[match.end() :]
    text = _HTML_COMMENT.sub("", text)
    sections = _split_lines(text.splitlines(), atx=True, min_underline=1)
    return ParsedDocument(title or _top_heading(sections), sections)


def _read_plain_text(text: str) -> ParsedDocument:
    sections = _split_lines(text.splitlines(), atx=False, min_underline=3)
    return ParsedDocument(_top_heading(sections), sections)


def _split_lines(lines: list[str], *, atx: bool, min_underline: int) -> list[Section]:
    """Sections at ATX headings (if ``atx``) and setext headings; code fences are text."""
    sections = [Section("", 0)]
    body: list[str] = []
    fence: str | None = None

    def start(heading: str, level: int) -> None:
        sections[-1].text = "\n".join(body).strip()
        body.clear()
        sections.append(Section(_clean_heading(heading), level))

    for line in lines:
        if fence is not None:
            body.append(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        if atx and (match := _FENCE.match(line)):
            fence = match.group(1)[0] * 3
            body.append(line)
            continue
        if atx and (match := _ATX.match(line)):
            start(match.group(2), len(match.group(1)))
            continue
        underline = _SETEXT.match(line)
        previous = body[-1].strip() if body else ""
        if (
            underline
            and len(underline.group(1)) >= min_underline
            and previous
            and len(previous) <= 120
            and not _LIST_ITEM.match(previous)
            and not previous.startswith(("|", ">"))
        ):
            body.pop()
            start(previous, 1 if underline.group(1)[0] == "=" else 2)
            continue
        body.append(line)
    sections[-1].text = "\n".join(body).strip()
    return sections


def _top_heading(sections: list[Section]) -> str | None:
    """The first heading, if it is the document's only one at its level or above."""
    headed = [s for s in sections if s.heading]
    if not headed or sections[0].text.strip():
        return None
    first = headed[0]
    if any(s.level <= first.level for s in headed[1:]):
        return None
    return first.heading


def _clean_heading(text: str) -> str:
    text = re.sub(r"\*\*|__|`", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return " ".join(text.split())


# --- HTML -------------------------------------------------------------------------------------

_SKIPPED_TAGS = frozenset(
    {"script", "style", "noscript", "template", "svg", "nav", "iframe", "object", "canvas"}
)
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
     "track", "wbr"}
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    {"p", "div", "section", "article", "main", "header", "footer", "aside", "ul", "ol", "li",
     "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr", "blockquote", "pre", "figure",
     "figcaption", "address", "form", "fieldset", "details", "summary", "br", "hr", "caption"}
)  # fmt: skip
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


class _HTMLSections(HTMLParser):
    """Collects the visible text of a page into sections at h1-h6."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = [Section("", 0)]
        self.page_title: str | None = None
        self.first_h1: str | None = None
        self._parts: list[str] = []
        self._heading: tuple[int, list[str]] | None = None
        self._skip: tuple[str, int] | None = None  # (tag, depth) of the subtree left out
        self._in_title = False
        self._title: list[str] = []
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            if tag == self._skip[0] and tag not in _VOID_TAGS:
                self._skip = (tag, self._skip[1] + 1)
            return
        attributes = dict(attrs)
        hidden = (
            "hidden" in attributes
            or (attributes.get("aria-hidden") or "").lower() == "true"
            or _HIDDEN_STYLE.search(attributes.get("style") or "")
        )
        if hidden and tag in _VOID_TAGS:
            return
        if tag in _SKIPPED_TAGS or hidden:
            self._skip = (tag, 1)
            return
        if tag == "title":
            self._in_title = True
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._flush_text()
            self._heading = (int(tag[1]), [])
        elif tag in ("td", "th"):
            if self._cell:
                self._parts.append(" | ")
            self._cell = True
        elif tag == "li":
            self._parts.append("\n- ")
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n")
        if tag == "tr":
            self._cell = False
        if tag == "img" and attributes.get("alt"):
            self._parts.append(f" {attributes['alt']} ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            if tag == self._skip[0]:
                depth = self._skip[1] - 1
                self._skip = None if depth == 0 else (tag, depth)
            return
        if tag == "title":
            self._in_title = False
            self.page_title = " ".join("".join(self._title).split()) or None
        elif self._heading is not None and tag == f"h{self._heading[0]}":
            level, parts = self._heading
            self._heading = None
            heading = " ".join("".join(parts).split())
            if heading:
                if level == 1 and self.first_h1 is None:
                    self.first_h1 = heading
                self.sections.append(Section(heading, level))
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n")
            if tag == "tr":
                self._cell = False

    def handle_data(self, data: str) -> None:
        if self._skip is not None:
            return
        if self._in_title:
            self._title.append(data)
        elif self._heading is not None:
            self._heading[1].append(data)
        else:
            self._parts.append(data)

    def _flush_text(self) -> None:
        text = "".join(self._parts)
        self._parts.clear()
        lines = (" ".join(line.split()) for line in text.splitlines())
        joined = "\n".join(line for line in lines if line)
        section = self.sections[-1]
        section.text = f"{section.text}\n{joined}".strip()

    def finish(self) -> None:
        self.close()
        self._flush_text()


def _read_html(text: str) -> ParsedDocument:
    parser = _HTMLSections()
    parser.feed(text)
    parser.finish()
    title = parser.first_h1 or parser.page_title
    return ParsedDocument(title, parser.sections)


# --- PDF --------------------------------------------------------------------------------------

_PAGE_NUMBER = re.compile(r"^(?:page\s+)?\d+(?:\s*(?:of|/)\s*\d+)?$", re.IGNORECASE)
_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)


@dataclass
class _Line:
    text: str
    size: float
    bold: bool
    page: int


def _read_pdf(data: bytes) -> ParsedDocument:
    import pypdf  # imported here: only PDFs need it

    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            if not reader.decrypt(""):
                raise ReadError("encrypted PDF (a password is needed)")
        except ReadError:
            raise
        except Exception as e:
            raise ReadError(f"encrypted PDF: {_one_line(e)}") from e
    lines: list[_Line] = []
    for number, page in enumerate(reader.pages, start=1):
        lines += _pdf_lines(page, number)
    if not lines:
        return ParsedDocument(None, [])
    lines = _drop_running_lines(lines, len(reader.pages))
    title = None
    if reader.metadata is not None and reader.metadata.title:
        title = " ".join(str(reader.metadata.title).split()) or None
    return ParsedDocument(title, _pdf_sections(lines))


def _pdf_lines(page: Any, number: int) -> list[_Line]:
    """The page's text lines, with the font size and boldness of each line's longest run."""
    runs: list[tuple[str, float, bool, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        if not text or not text.strip("\n"):
            return
        scale = math.sqrt(abs(tm[0] * tm[3] - tm[1] * tm[2])) * math.sqrt(
            abs(cm[0] * cm[3] - cm[1] * cm[2])
        )
        name = str(font.get("/BaseFont", "")) if font else ""
        y = tm[5] * cm[3] + cm[5]
        runs.append((text, size * (scale or 1.0), bool(_BOLD_FONT.search(name)), y))

    page.extract_text(visitor_text=visit)
    lines: list[_Line] = []
    current: list[tuple[str, float, bool, float]] = []

    def flush() -> None:
        text = " ".join("".join(run[0] for run in current).split())
        if text:
            longest = max(current, key=lambda run: len(run[0].strip()))
            bold = all(run[2] for run in current if run[0].strip())
            lines.append(_Line(text, round(longest[1], 1), bold, number))
        current.clear()

    for run in runs:
        if current and (abs(run[3] - current[-1][3]) > 1.0 or current[-1][0].endswith("\n")):
            flush()
        current.append(run)
    if current:
        flush()
    return lines


def _drop_running_lines(lines: list[_Line], pages: int) -> list[_Line]:
    """Leave out page numbers and the headers and footers repeated on most pages."""

    def key(text: str) -> str:
        return re.sub(r"\d+", "#", text.casefold())

    on_pages = Counter(key for key in {(key(line.text), line.page) for line in lines})
    counts = Counter(text for text, _ in on_pages)
    repeated = {text for text, count in counts.items() if pages >= 3 and count >= pages / 2}
    return [
        line
        for line in lines
        if not _PAGE_NUMBER.match(line.text) and key(line.text) not in repeated
    ]


def _pdf_sections(lines: list[_Line]) -> list[Section]:
    sizes: Counter[float] = Counter()
    for line in lines:
        sizes[line.size] += len(line.text)
    body = sizes.most_common(1)[0][0]

    def is_heading(line: _Line) -> bool:
        if len(line.text.split()) > 15 or len(line.text) < 2 or line.text.endswith((".", ",")):
            return False
        return line.size >= body * 1.15 or (line.bold and line.size >= body - 0.05)

    heading_sizes = sorted({line.size for line in lines if is_heading(line)}, reverse=True)
    sections = [Section("", 0, page=lines[0].page)]
    body_lines: list[str] = []

    def close() -> None:
        sections[-1].text = "\n".join(body_lines).strip()
        body_lines.clear()

    for line in lines:
        if is_heading(line):
            close()
            sections.append(Section(line.text, heading_sizes.index(line.size) + 1, page=line.page))
            continue
        if line.page != sections[-1].page:
            close()
            last = sections[-1]
            sections.append(Section(last.heading, last.level, page=line.page))
        body_lines.append(line.text.replace("\u2022 ", "- ").replace("\u2022", "-"))
    close()
    return sections


# --- DOCX -------------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_HEADING_NAME = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _read_docx(data: bytes) -> ParsedDocument:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        document = _zip_xml(archive, "word/document.xml", required=True)
        styles = _zip_xml(archive, "word/styles.xml")
        core = _zip_xml(archive, "docProps/core.xml")
    assert document is not None
    levels = _docx_heading_levels(styles)
    body = document.find(f"{_W}body")
    if body is None:
        raise ReadError("not a Word document (no body)")
    sections = [Section("", 0)]
    title: str | None = None
    body_lines: list[str] = []

    def close() -> None:
        sections[-1].text = "\n".join(body_lines).strip()
        body_lines.clear()

    for element in _docx_blocks(body):
        if element.tag == f"{_W}tbl":
            body_lines += _docx_table(element)
            continue
        text = _docx_paragraph_text(element).strip()
        if not text:
            continue
        level = _docx_paragraph_level(element, levels)
        if level is None:
            numbered = element.find(f"{_W}pPr/{_W}numPr") is not None
            body_lines.append(f"- {text}" if numbered else text)
            continue
        heading = " ".join(text.split())
        if level == 0 and title is None:
            title = heading
        close()
        sections.append(Section(heading, level + 1))  # Title is 1, Heading 1 is 2...
    close()
    if title is None and core is not None:
        found = core.find(_DC_TITLE)
        if found is not None and found.text and found.text.strip():
            title = " ".join(found.text.split())
    return ParsedDocument(title, sections)


def _zip_xml(
    archive: zipfile.ZipFile, name: str, *, required: bool = False
) -> ElementTree.Element | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        if required:
            raise ReadError(f"not a Word document (no {name})") from None
        return None
    if info.file_size > _MAX_XML_BYTES:
        raise ReadError(f"{name} is too large ({info.file_size // 2**20} MB uncompressed)")
    data = archive.read(info)
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise ReadError(f"{name} declares a DTD, which a Word document never does")
    return ElementTree.fromstring(data)


def _docx_heading_levels(styles: ElementTree.Element | None) -> dict[str, int]:
    """Style id → heading level (0 for Title) of the paragraph styles that are headings."""
    levels = {"Title": 0, **{f"Heading{n}": n for n in range(1, 10)}}
    if styles is None:
        return levels
    for style in styles.iter(f"{_W}style"):
        style_id = style.get(f"{_W}styleId")
        if not style_id:
            continue
        name_element = style.find(f"{_W}name")
        name = (name_element.get(f"{_W}val") or "") if name_element is not None else ""
        outline = style.find(f"{_W}pPr/{_W}outlineLvl")
        if name.casefold() == "title":
            levels[style_id] = 0
        elif match := _HEADING_NAME.match(name):
            levels[style_id] = int(match.group(1))
        elif outline is not None and (value := outline.get(f"{_W}val", "")).isdigit():
            if int(value) < 9:
                levels[style_id] = int(value) + 1
    return levels


def _docx_blocks(parent: ElementTree.Element):
    """Paragraphs and tables in order, looking inside content controls (``w:sdt``)."""
    for element in parent:
        if element.tag in (f"{_W}p", f"{_W}tbl"):
            yield element
        elif element.tag == f"{_W}sdt":
            content = element.find(f"{_W}sdtContent")
            if content is not None:
                yield from _docx_blocks(content)


def _docx_paragraph_level(paragraph: ElementTree.Element, levels: dict[str, int]) -> int | None:
    style = paragraph.find(f"{_W}pPr/{_W}pStyle")
    if style is not None and (style_id := style.get(f"{_W}val")) in levels:
        return levels[style_id]
    outline = paragraph.find(f"{_W}pPr/{_W}outlineLvl")
    if outline is not None and (value := outline.get(f"{_W}val", "")).isdigit():
        return int(value) + 1 if int(value) < 9 else None
    return None


def _is_hidden(run: ElementTree.Element) -> bool:
    vanish = run.find(f"{_W}rPr/{_W}vanish")
    return vanish is not None and vanish.get(f"{_W}val", "true") not in ("0", "false")


def _docx_paragraph_text(paragraph: ElementTree.Element) -> str:
    parts: list[str] = []
    for run in paragraph.iter(f"{_W}r"):
        if _is_hidden(run):
            continue
        for child in run:
            if child.tag == f"{_W}t":
                parts.append(child.text or "")
            elif child.tag == f"{_W}tab":
                parts.append("\t")
            elif child.tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
    return "".join(parts)


def _docx_table(table: ElementTree.Element) -> list[str]:
    rows = []
    for row in table.iter(f"{_W}tr"):
        cells = [
            " ".join(" ".join(_docx_paragraph_text(p).split()) for p in cell.iter(f"{_W}p")).strip()
            for cell in row.iter(f"{_W}tc")
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


# --- Shared -----------------------------------------------------------------------------------


def _with_paths(sections: list[Section]) -> list[Section]:
    """Fill each section's ``path``: the headings above it, outermost first."""
    stack: list[tuple[int, str]] = []
    for section in sections:
        if section.heading:
            while stack and stack[-1][0] >= section.level:
                stack.pop()
            if not stack or stack[-1] != (section.level, section.heading):
                stack.append((section.level, section.heading))
            section.path = tuple(heading for _, heading in stack)
    return sections


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
