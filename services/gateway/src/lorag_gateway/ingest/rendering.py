"""Rendering of the structured formats to plain text: Markdown (markdown-it-py tokens), HTML (selectolax's
lexbor) and PDF (pypdf). Each returns ``(text, title)``; :mod:`.parsing` chooses one by media type, decodes
text, enforces the limits and normalises the result."""

from __future__ import annotations

import io
import re
import unicodedata

from lorag_core.errors import InvalidArgument

DATA_FIELD = "document.data"
UNPARSABLE_DOCUMENT = "UNPARSABLE_DOCUMENT"

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


def collapse_spaces(text: str) -> str:
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
                text = collapse_spaces(raw)
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
        title = collapse_spaces(node.text(deep=True)).strip() or None
    if title is None:
        node = tree.css_first("h1")
        if node is not None:
            title = collapse_spaces(node.text(deep=True)).strip() or None
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
