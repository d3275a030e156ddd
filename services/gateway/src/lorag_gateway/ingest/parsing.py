"""Parse a document's content into readable plain text: the text that is chunked, embedded, indexed and cited.

``parse(content, mime_type, source_uri)`` handles the four types the gateway contract accepts:

- ``text/plain``: decoded and lightly normalised;
- ``text/markdown``: rendered to plain text from markdown-it-py's tokens: heading, paragraph, list item
  (``- `` / ``1. `` markers kept, nested items indented), table row (cells joined by `` | ``) and code text are
  kept; emphasis, link and image syntax are dropped (link text and image alt text are kept), raw HTML is reduced
  to its text; the title is a YAML front-matter ``title:``, else the first level-1 heading, else the first heading;
- ``text/html``: rendered with selectolax (lexbor): ``script``/``style``/``head``/``nav`` and similar
  boilerplate (and elements marked ``hidden``) are dropped, block elements become line or paragraph breaks,
  inline whitespace is collapsed except in ``<pre>``; the title is ``<title>``, else the first ``<h1>``;
- ``application/pdf``: the text of each page from pypdf, pages joined with a blank line; the title is the
  PDF's metadata title.

Every result goes through :func:`normalize_text`, so the same document gives the same text whichever way it
arrives. That text is what ``char_start``/``char_end`` of chunks index into, and what ``content_sha256`` hashes.

Errors are :class:`lorag_core.errors.InvalidArgument` with a stable reason: ``UNSUPPORTED_MIME_TYPE``,
``INVALID_ENCODING``, ``EMPTY_DOCUMENT``, ``DOCUMENT_TOO_LARGE`` and ``UNPARSABLE_DOCUMENT``.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from lorag_core.errors import InvalidArgument

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
APPLICATION_PDF = "application/pdf"

#: The media types ``parse`` accepts, in the contract's order.
SUPPORTED_MIME_TYPES: tuple[str, ...] = (TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, APPLICATION_PDF)

#: Other spellings accepted for the supported types.
MIME_ALIASES: dict[str, str] = {
    "text/x-markdown": TEXT_MARKDOWN,
    "text/md": TEXT_MARKDOWN,
    "application/xhtml+xml": TEXT_HTML,
    "application/x-pdf": APPLICATION_PDF,
}

#: File extensions (lower case) mapped to the media type they imply.
EXTENSION_MIME_TYPES: dict[str, str] = {
    ".txt": TEXT_PLAIN,
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".html": TEXT_HTML,
    ".htm": TEXT_HTML,
    ".pdf": APPLICATION_PDF,
}

#: The default limit on a document's size: its content as sent (UTF-8 bytes for text), and its extracted text.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

# Reasons of the InvalidArgument errors raised here (ErrorInfo.reason).
UNSUPPORTED_MIME_TYPE = "UNSUPPORTED_MIME_TYPE"
INVALID_ENCODING = "INVALID_ENCODING"
EMPTY_DOCUMENT = "EMPTY_DOCUMENT"
DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"
UNPARSABLE_DOCUMENT = "UNPARSABLE_DOCUMENT"

MIME_TYPE_FIELD = "document.mime_type"
TEXT_FIELD = "document.text"
DATA_FIELD = "document.data"


@dataclass(frozen=True)
class ParsedDocument:
    """A document's extracted text, the title its content declares (``None`` when none), and its media type."""

    text: str
    title: str | None
    mime_type: str


# --------------------------------------------------------------------------------------------------------------
# Normalisation


_LINE_SEPARATORS = re.compile("[\r\x0b\x0c\x85\u2028\u2029]")
# C0 and C1 controls except tab and newline (carriage returns are translated first), DEL, and the BOM / zero-width
# no-break space: none of them is readable text.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Normalise text lightly, keeping it readable.

    Line endings become ``\\n`` (also vertical tab, form feed, NEL and the Unicode line/paragraph separators),
    control characters and BOMs are removed, no-break spaces become spaces, the text is NFC-composed, trailing
    spaces are removed from each line, runs of blank lines collapse into one (so a paragraph break is exactly
    ``\\n\\n``), and the whole is stripped. Spaces inside lines are kept (indentation of code and plain-text
    tables stays).
    """
    text = _LINE_SEPARATORS.sub("\n", text.replace("\r\n", "\n")).replace("\u00a0", " ")
    text = _CONTROL_CHARS.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _TRAILING_SPACE.sub("\n", text + "\n")
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


# --------------------------------------------------------------------------------------------------------------
# MIME types and decoding


def split_mime_type(mime_type: str) -> tuple[str, dict[str, str]]:
    """``"text/html; charset=UTF-8"`` → ``("text/html", {"charset": "UTF-8"})``; the type is lower-cased."""
    base, *params = mime_type.split(";")
    parameters: dict[str, str] = {}
    for param in params:
        name, sep, value = param.partition("=")
        if sep:
            parameters[name.strip().lower()] = value.strip().strip('"')
    return base.strip().lower(), parameters


def uri_extension(source_uri: str) -> str:
    """The extension of a file path or URI's path (``"https://x.org/a/b.PDF?x=1"`` → ``".PDF"``), or ``""``."""
    path = urlsplit(source_uri).path if "://" in source_uri else source_uri
    return PurePosixPath(path.replace("\\", "/")).suffix


def mime_type_from_extension(source_uri: str) -> str | None:
    """The media type a file name or URI's extension implies, or ``None`` when it implies none we parse."""
    return EXTENSION_MIME_TYPES.get(uri_extension(source_uri).lower())


def sniff_mime_type(data: bytes) -> str | None:
    """The media type of raw content recognised by its first bytes (PDF header, HTML markup), or ``None``."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"%PDF-" in data[:1024]:
        return APPLICATION_PDF
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]:
        return TEXT_HTML
    return None


def resolve_mime_type(content: bytes | str, mime_type: str, source_uri: str = "") -> tuple[str, dict[str, str]]:
    """The canonical supported type of a document and the parameters of its declared type.

    An empty type follows the contract: ``text/plain`` for text content; for bytes, the type the source_uri's
    extension implies (``.txt``, ``.md``, ``.markdown``, ``.html``, ``.htm``, ``.pdf``), else the type the
    content's first bytes show (``%PDF-``, ``<html``), else ``text/plain`` when the source_uri has no extension.
    Raises InvalidArgument (``UNSUPPORTED_MIME_TYPE``) for any other type.
    """
    base, params = split_mime_type(mime_type)
    if base:
        canonical = MIME_ALIASES.get(base, base)
        if canonical not in SUPPORTED_MIME_TYPES:
            raise InvalidArgument.of(
                MIME_TYPE_FIELD,
                f"unsupported media type {base!r}; supported: {', '.join(SUPPORTED_MIME_TYPES)}",
                reason=UNSUPPORTED_MIME_TYPE,
                mime_type=base,
            )
        return canonical, params
    if isinstance(content, str):
        return TEXT_PLAIN, params
    guessed = mime_type_from_extension(source_uri) or sniff_mime_type(content)
    if guessed:
        return guessed, params
    suffix = uri_extension(source_uri)
    if not suffix:
        return TEXT_PLAIN, params
    raise InvalidArgument.of(
        MIME_TYPE_FIELD,
        f"no media type given and the extension {suffix!r} of the source_uri is not one lorag parses; set "
        f"mime_type to one of {', '.join(SUPPORTED_MIME_TYPES)}",
        reason=UNSUPPORTED_MIME_TYPE,
        extension=suffix,
    )


_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


def _decode_with(data: bytes, encoding: str, how: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidArgument.of(
            DATA_FIELD, f"unknown character encoding {encoding!r} ({how})", reason=INVALID_ENCODING, encoding=encoding
        ) from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InvalidArgument.of(
            DATA_FIELD,
            f"not valid {encoding} ({how}): byte 0x{data[exc.start]:02x} at offset {exc.start}",
            reason=INVALID_ENCODING,
            encoding=encoding,
        ) from None


def decode_text(data: bytes, charset: str | None = None, *, html: bool = False) -> str:
    """Decode text bytes without guessing: a byte-order mark (UTF-8, UTF-16, UTF-32) wins, then a declared
    charset (the MIME type's ``charset`` parameter), then strict UTF-8, then (HTML only) the charset the
    document's ``<meta>`` declares. Anything else raises InvalidArgument ``INVALID_ENCODING``; Latin-1 is never
    assumed. Text with NUL characters is refused too: it is binary, or UTF-16 without a BOM.
    """
    text: str | None = None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = _decode_with(data, encoding, "from its byte-order mark")
            break
    if text is None and charset:
        text = _decode_with(data, charset, "the charset declared in mime_type")
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            declared = _META_CHARSET.search(data[:4096]) if html else None
            if declared is None:
                raise InvalidArgument.of(
                    DATA_FIELD,
                    f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}) and no byte-order mark "
                    "or declared charset; send UTF-8, or declare the encoding, e.g. "
                    "mime_type 'text/plain; charset=windows-1252'",
                    reason=INVALID_ENCODING,
                ) from None
            text = _decode_with(data, declared.group(1).decode("ascii"), "the charset declared by the HTML <meta>")
    if "\x00" in text:
        raise InvalidArgument.of(
            DATA_FIELD,
            "the content has NUL characters: it is binary, or UTF-16/UTF-32 without a byte-order mark",
            reason=INVALID_ENCODING,
        )
    return text


# --------------------------------------------------------------------------------------------------------------
# Markdown


class _TextBuffer:
    """Accumulates rendered text, with line and paragraph breaks that never pile up or lead the text."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._tail = ""  # the last (up to) two characters written

    def write(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self._tail = (self._tail + text)[-2:]

    def at_line_start(self) -> bool:
        return not self._tail or self._tail.endswith("\n")

    def line_break(self) -> None:
        if self._tail and not self._tail.endswith("\n"):
            self.write("\n")

    def paragraph_break(self) -> None:
        if not self._tail:
            return
        if self._tail.endswith("\n\n"):
            return
        self.write("\n" if self._tail.endswith("\n") else "\n\n")

    def text(self) -> str:
        return "".join(self._parts)


def _markdown_parser():  # -> MarkdownIt
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


_md = None


def _front_matter(source: str) -> tuple[str, str | None]:
    """Split a leading YAML front-matter block (``---`` … ``---``) off Markdown; return the rest and its title."""
    lines = source.split("\n")
    if not lines or lines[0].strip() != "---":
        return source, None
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            title = None
            for line in lines[1:end]:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "title":
                    title = value.strip().strip("\"'").strip() or None
                    break
            return "\n".join(lines[end + 1 :]), title
        if lines[end] and ":" not in lines[end] and not lines[end].startswith((" ", "-", "#")):
            return source, None  # not YAML: an ordinary thematic break
    return source, None


def _render_inline(children) -> str:
    out: list[str] = []
    for child in children or ():
        kind = child.type
        if kind in ("text", "code_inline"):
            out.append(child.content)
        elif kind == "softbreak":
            out.append(" ")  # a wrapped source line, not a break in the text
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "image":
            out.append(child.content)  # the alt text
        elif kind == "html_inline" and re.fullmatch(r"<br\s*/?>", child.content.strip(), re.IGNORECASE):
            out.append("\n")
    return "".join(out)


def _end_block(buf: _TextBuffer, lists: list) -> None:
    if lists:
        buf.line_break()
    else:
        buf.paragraph_break()


def markdown_to_text(source: str) -> tuple[str, str | None]:
    """Render Markdown to plain text (see the module docstring); return the text and the title it declares."""
    global _md
    if _md is None:
        _md = _markdown_parser()
    source, title = _front_matter(source)
    tokens = _md.parse(source)
    buf = _TextBuffer()
    lists: list[dict[str, int | bool]] = []  # one entry per open list: ordered?, next number
    item_fresh = False  # the current list item's marker was written and nothing after it yet
    first_h1: str | None = None
    first_heading: str | None = None
    in_heading: str | None = None
    row_cells = 0

    def block_start() -> None:
        nonlocal item_fresh
        if item_fresh:
            item_fresh = False
            return
        if lists:
            buf.line_break()
            buf.write("  " * len(lists))
        else:
            buf.paragraph_break()

    for token in tokens:
        kind = token.type
        if kind == "heading_open":
            block_start()
            in_heading = token.tag
        elif kind == "heading_close":
            in_heading = None
            _end_block(buf, lists)
        elif kind == "paragraph_open":
            block_start()
        elif kind == "paragraph_close":
            if not lists:
                buf.paragraph_break()
        elif kind in ("bullet_list_open", "ordered_list_open"):
            if lists:
                buf.line_break()
            else:
                buf.paragraph_break()
            start = int(token.attrGet("start") or 1) if kind == "ordered_list_open" else 1
            lists.append({"ordered": kind == "ordered_list_open", "next": start})
            item_fresh = False
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            if not lists:
                buf.paragraph_break()
        elif kind == "list_item_open":
            buf.line_break()
            current = lists[-1]
            if current["ordered"]:
                marker = f"{token.info or current['next']}{token.markup or '.'} "
                current["next"] = int(current["next"]) + 1
            else:
                marker = "- "
            buf.write("  " * (len(lists) - 1) + marker)
            item_fresh = True
        elif kind == "list_item_close":
            item_fresh = False
        elif kind == "inline":
            text = _render_inline(token.children).strip()
            if in_heading is not None:
                if first_heading is None:
                    first_heading = text
                if in_heading == "h1" and first_h1 is None:
                    first_h1 = text
            if row_cells:
                buf.write(" | ")
            buf.write(text)
        elif kind in ("fence", "code_block"):
            block_start()
            buf.write(token.content.rstrip("\n"))
            _end_block(buf, lists)
        elif kind == "html_block":
            text = _html_fragment_text(token.content)
            if text:
                block_start()
                buf.write(text)
                _end_block(buf, lists)
        elif kind == "table_open" or kind == "table_close":
            buf.paragraph_break()
        elif kind == "tr_open":
            buf.line_break()
            row_cells = 0
        elif kind in ("th_close", "td_close"):
            row_cells += 1
        elif kind == "tr_close":
            row_cells = 0
        elif kind in ("blockquote_open", "blockquote_close", "hr"):
            if lists:
                buf.line_break()
            else:
                buf.paragraph_break()
        item_fresh = item_fresh and kind in ("list_item_open", "paragraph_open")
    title = title or first_h1 or first_heading
    return buf.text(), title or None


# --------------------------------------------------------------------------------------------------------------
# HTML

# Elements whose content is never document text.
_DROP_TAGS = frozenset(
    {
        "head",
        "script",
        "style",
        "noscript",
        "template",
        "nav",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "select",
        "button",
        "dialog",
        "-comment",
        "!doctype",
    }
)
# Elements rendered as their own paragraph (a blank line before and after).
_PARAGRAPH_TAGS = frozenset(
    {
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "dl",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "aside",
        "figure",
        "hr",
        "address",
        "details",
        "fieldset",
        "form",
    }
)
# Elements rendered on their own line.
_LINE_TAGS = frozenset(
    {
        "div",
        "li",
        "tr",
        "dt",
        "dd",
        "br",
        "figcaption",
        "caption",
        "summary",
        "legend",
        "tbody",
        "thead",
        "tfoot",
        "option",
        "label",
    }
)
_INLINE_SPACE = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _INLINE_SPACE.sub(" ", text)


def _is_hidden(node) -> bool:
    attrs = node.attributes
    if "hidden" in attrs:
        return True
    if (attrs.get("aria-hidden") or "").lower() == "true":
        return True
    style = (attrs.get("style") or "").replace(" ", "").lower()
    return "display:none" in style


def _render_html(root) -> str:
    """Render a DOM subtree to text: block elements become breaks, inline whitespace collapses outside <pre>."""
    buf = _TextBuffer()
    # (node, entering?) pairs; exits close blocks. Iterative, so deeply nested pages cannot overflow the stack.
    stack: list[tuple[object, bool]] = [(root, True)]
    pre_depth = 0
    lists: list[list[int]] = []  # per open list: [ordered (0/1), next number]
    row_cells: list[int] = []
    article_depth = 0
    while stack:
        node, entering = stack.pop()
        tag = node.tag  # type: ignore[attr-defined]  # selectolax nodes are untyped
        if not entering:
            if tag == "pre":
                pre_depth -= 1
            elif tag in ("ul", "ol"):
                lists.pop()
                if lists:
                    buf.line_break()
                    continue
            elif tag in ("article", "main"):
                article_depth -= 1
            elif tag == "tr":
                row_cells.pop()
            elif tag in ("td", "th") and row_cells:
                row_cells[-1] += 1
            if tag in _PARAGRAPH_TAGS:
                buf.paragraph_break()
            elif tag in _LINE_TAGS:
                buf.line_break()
            continue
        if tag == "-text":
            raw = node.text(deep=False)  # type: ignore[attr-defined]  # selectolax nodes are untyped
            if pre_depth:
                buf.write(raw)
            else:
                text = _collapse(raw)
                if buf.at_line_start():
                    text = text.lstrip()
                buf.write(text)
            continue
        if tag in _DROP_TAGS or (tag not in ("html", "body", "-undef") and _is_hidden(node)):
            continue
        if tag == "footer" and not article_depth:
            continue  # a page footer (copyright, site links), not an article's
        if tag == "br":
            buf.write("\n")
            continue
        if tag in _PARAGRAPH_TAGS and not (lists and tag in ("ul", "ol")):
            buf.paragraph_break()
        elif tag in _LINE_TAGS or tag in ("ul", "ol"):
            buf.line_break()
        if tag == "pre":
            pre_depth += 1
        elif tag in ("ul", "ol"):
            start = node.attributes.get("start") if tag == "ol" else None  # type: ignore[attr-defined]  # selectolax nodes are untyped
            lists.append([1 if tag == "ol" else 0, int(start) if start and start.lstrip("-").isdigit() else 1])
        elif tag in ("article", "main"):
            article_depth += 1
        elif tag == "li":
            buf.write("  " * max(0, len(lists) - 1))
            if lists and lists[-1][0]:
                buf.write(f"{lists[-1][1]}. ")
                lists[-1][1] += 1
            else:
                buf.write("- ")
        elif tag == "tr":
            row_cells.append(0)
        elif tag in ("td", "th") and row_cells and row_cells[-1]:
            buf.write(" | ")
        elif tag == "img":
            alt = (node.attributes.get("alt") or "").strip()  # type: ignore[attr-defined]  # selectolax nodes are untyped
            if alt:
                buf.write(f"{alt} " if buf.at_line_start() else f" {alt} ")
        stack.append((node, False))
        children = []
        child = node.child  # type: ignore[attr-defined]  # selectolax nodes are untyped
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend((c, True) for c in reversed(children))
    return buf.text()


def _lexbor(html: str):
    from selectolax.lexbor import LexborHTMLParser

    return LexborHTMLParser(html)


def _html_fragment_text(html: str) -> str:
    tree = _lexbor(html)
    root = tree.body or tree.root
    return normalize_text(_render_html(root)) if root is not None else ""


def html_to_text(html: str) -> tuple[str, str | None]:
    """Render an HTML page to readable text (see the module docstring); return the text and its title."""
    tree = _lexbor(html)
    title: str | None = None
    node = tree.css_first("title")
    if node is not None:
        title = _collapse(node.text(deep=True)).strip() or None
    if title is None:
        node = tree.css_first("h1")
        if node is not None:
            title = _collapse(node.text(deep=True)).strip() or None
    root = tree.body or tree.root
    text = _render_html(root) if root is not None else ""
    return text, title


# --------------------------------------------------------------------------------------------------------------
# PDF


_SPACE_RUNS = re.compile(r"[ \t]{2,}")


def pdf_to_text(data: bytes) -> tuple[str, str | None]:
    """Extract a PDF's text with pypdf, page by page, pages joined with a blank line; the title is the PDF's."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidArgument.of(DATA_FIELD, "the PDF is encrypted with a password", reason=UNPARSABLE_DOCUMENT)
        pages = [page.extract_text() or "" for page in reader.pages]
        title = None
        try:
            meta = reader.metadata
            title = str(meta.title).strip() if meta is not None and meta.title else None
        except Exception:  # a broken Info dictionary loses the title, not the document
            title = None
    except InvalidArgument:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files
        raise InvalidArgument.of(
            DATA_FIELD, f"not a readable PDF: {type(exc).__name__}: {exc}"[:300], reason=UNPARSABLE_DOCUMENT
        ) from None
    text = "\n\n".join(_SPACE_RUNS.sub(" ", page).strip() for page in pages)
    return text, title or None


# --------------------------------------------------------------------------------------------------------------
# Entry point


def content_size(content: bytes | str) -> int:
    """The size of content in bytes: its length, or its UTF-8 length for text."""
    if isinstance(content, str):
        return len(content.encode("utf-8", "surrogatepass"))
    return len(content)


def _too_large(field_path: str, size: int, max_bytes: int, what: str) -> InvalidArgument:
    return InvalidArgument.of(
        field_path,
        f"{what} is {size} bytes; the limit is {max_bytes} bytes",
        reason=DOCUMENT_TOO_LARGE,
        limit=str(max_bytes),
        size=str(size),
    )


def parse(
    content: bytes | str,
    mime_type: str = "",
    source_uri: str = "",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParsedDocument:
    """Parse a document's content into normalised text and a title.

    ``content`` is the document as text or raw bytes; ``mime_type`` its type (see :func:`resolve_mime_type` for
    an empty one; a ``charset`` parameter is honoured for text bytes); ``source_uri`` only serves to guess an
    empty type from its extension. Raises InvalidArgument (field ``document.text``, ``document.data`` or
    ``document.mime_type``) with reason UNSUPPORTED_MIME_TYPE, INVALID_ENCODING, EMPTY_DOCUMENT,
    DOCUMENT_TOO_LARGE (content or extracted text over ``max_bytes``) or UNPARSABLE_DOCUMENT.
    """
    content_field = TEXT_FIELD if isinstance(content, str) else DATA_FIELD
    size = content_size(content)
    if size > max_bytes:
        raise _too_large(content_field, size, max_bytes, "the document")
    mime, params = resolve_mime_type(content, mime_type, source_uri)
    charset = params.get("charset")

    if mime == APPLICATION_PDF:
        if isinstance(content, str):
            raise InvalidArgument.of(
                content_field,
                "application/pdf content must be sent as data (bytes), not text",
                reason=UNSUPPORTED_MIME_TYPE,
            )
        raw, title = pdf_to_text(content)
    else:
        source = content if isinstance(content, str) else decode_text(content, charset, html=mime == TEXT_HTML)
        if mime == TEXT_MARKDOWN:
            raw, title = markdown_to_text(source)
        elif mime == TEXT_HTML:
            raw, title = html_to_text(source)
        else:
            raw, title = source, None

    text = normalize_text(raw)
    if not text:
        what = "no extractable text (a scanned PDF? OCR is not supported)" if mime == APPLICATION_PDF else "no text"
        raise InvalidArgument.of(content_field, f"the document has {what} after parsing", reason=EMPTY_DOCUMENT)
    if mime == APPLICATION_PDF:
        text_size = content_size(text)
        if text_size > max_bytes:
            raise _too_large(content_field, text_size, max_bytes, "the extracted text")
    if title is not None:
        title = normalize_text(_collapse(title)) or None
    return ParsedDocument(text=text, title=title, mime_type=mime)


__all__ = [
    "APPLICATION_PDF",
    "DEFAULT_MAX_BYTES",
    "DOCUMENT_TOO_LARGE",
    "EMPTY_DOCUMENT",
    "EXTENSION_MIME_TYPES",
    "INVALID_ENCODING",
    "SUPPORTED_MIME_TYPES",
    "TEXT_HTML",
    "TEXT_MARKDOWN",
    "TEXT_PLAIN",
    "UNPARSABLE_DOCUMENT",
    "UNSUPPORTED_MIME_TYPE",
    "ParsedDocument",
    "decode_text",
    "html_to_text",
    "markdown_to_text",
    "mime_type_from_extension",
    "normalize_text",
    "parse",
    "pdf_to_text",
    "resolve_mime_type",
    "sniff_mime_type",
    "split_mime_type",
]
