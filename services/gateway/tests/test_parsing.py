"""Parsing documents into text: plain text, Markdown, HTML and PDF, MIME resolution, decoding and errors."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from pypdf import PdfWriter

from lorag_core.errors import InvalidArgument
from lorag_gateway.ingest.parsing import (
    APPLICATION_PDF,
    DOCUMENT_TOO_LARGE,
    EMPTY_DOCUMENT,
    INVALID_ENCODING,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    UNPARSABLE_DOCUMENT,
    UNSUPPORTED_MIME_TYPE,
    normalize_text,
    parse,
    resolve_mime_type,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
MARKDOWN_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal but valid PDF: one Helvetica text line per string, with a correct xref table."""

    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    page_count = len(pages)
    # objects: 1 catalog, 2 pages, 3 font, 4 info, then (page, contents) per page
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids ["
        + b" ".join(f"{5 + 2 * i} 0 R".encode() for i in range(page_count))
        + f"] /Count {page_count} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: (f"<< /Title ({escape(title)}) >>" if title else "<< >>").encode("latin-1"),
    }
    for i, lines in enumerate(pages):
        body = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
        stream = body.encode("latin-1")
        objects[5 + 2 * i] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {6 + 2 * i} 0 R >>"
        ).encode()
        objects[6 + 2 * i] = f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n")
    xref = out.tell()
    size = max(objects) + 1
    out.write(f"xref\n0 {size}\n0000000000 65535 f \n".encode())
    for number in range(1, size):
        out.write(f"{offsets[number]:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {size} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def error_of(excinfo: pytest.ExceptionInfo[InvalidArgument]) -> tuple[str, str]:
    error = excinfo.value
    assert error.violations, "an InvalidArgument names its field"
    return error.reason, error.violations[0].field


# ----------------------------------------------------------------------------------------------------------------
# normalisation and plain text


def test_normalize_text_keeps_paragraphs_and_removes_noise() -> None:
    raw = (
        "\ufeffTitle  \r\n\r\n\r\n\r\nFirst\x00 line\x07\r\nsecond\u00a0line\t \n\n\n\n"
        "  indented code\ncafe\u0301\u2028end\n\n"
    )
    assert normalize_text(raw) == "Title\n\nFirst line\nsecond line\n\n  indented code\ncafé\nend"


def test_plain_text_str_and_bytes_agree() -> None:
    text = "Hello world.\r\n\r\nSecond paragraph with ünïcödé.\n"
    from_str = parse(text, "text/plain")
    from_bytes = parse(text.encode("utf-8"), "text/plain")
    assert from_str == from_bytes
    assert from_str.text == "Hello world.\n\nSecond paragraph with ünïcödé."
    assert from_str.title is None
    assert from_str.mime_type == TEXT_PLAIN


@pytest.mark.parametrize(
    "encoding",
    ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-32"],
)
def test_plain_text_bytes_with_a_byte_order_mark_decode(encoding: str) -> None:
    text = "Grüße aus Köln — 東京 ✓"
    if encoding == "utf-16-le-bom":
        data = b"\xff\xfe" + text.encode("utf-16-le")
    elif encoding == "utf-16-be-bom":
        data = b"\xfe\xff" + text.encode("utf-16-be")
    else:
        data = text.encode(encoding)
    assert parse(data, "text/plain").text == text


def test_latin1_bytes_are_refused_not_guessed() -> None:
    data = "Café crème brûlée".encode("latin-1")
    with pytest.raises(InvalidArgument) as excinfo:
        parse(data, "text/plain")
    assert error_of(excinfo) == (INVALID_ENCODING, "document.data")
    assert "offset 3" in excinfo.value.violations[0].description


def test_a_declared_charset_is_honoured() -> None:
    data = "Café crème brûlée".encode("latin-1")
    assert parse(data, "text/plain; charset=ISO-8859-1").text == "Café crème brûlée"
    with pytest.raises(InvalidArgument) as excinfo:
        parse(data, "text/plain; charset=no-such-codec")
    assert error_of(excinfo)[0] == INVALID_ENCODING


def test_utf16_without_bom_is_refused() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse("plain ascii text".encode("utf-16-le"), "text/plain")
    assert error_of(excinfo)[0] == INVALID_ENCODING


# ----------------------------------------------------------------------------------------------------------------
# MIME types


@pytest.mark.parametrize(
    ("content", "source_uri", "expected"),
    [
        (b"# Title", "notes/readme.md", TEXT_MARKDOWN),
        (b"# Title", "notes/README.MARKDOWN", TEXT_MARKDOWN),
        (b"<p>x</p>", "site/page.HTM", TEXT_HTML),
        (b"<p>x</p>", "https://example.org/a/page.html?lang=en#top", TEXT_HTML),
        (b"text", "file.txt", TEXT_PLAIN),
        (b"%PDF-1.7 ...", "scan.pdf", APPLICATION_PDF),
        (b"%PDF-1.7 ...", "", APPLICATION_PDF),
        (b"  <!DOCTYPE html><html><body>x</body></html>", "", TEXT_HTML),
        (b"<html lang=en>x</html>", "https://example.org", TEXT_HTML),
        (b"just words", "", TEXT_PLAIN),
        (b"just words", "https://example.org/", TEXT_PLAIN),
        (b"%PDF-1.4 ...", "download.bin", APPLICATION_PDF),
    ],
)
def test_empty_mime_type_is_guessed_for_bytes(content: bytes, source_uri: str, expected: str) -> None:
    assert resolve_mime_type(content, "", source_uri)[0] == expected


def test_empty_mime_type_means_plain_text_for_text_content() -> None:
    # The contract: "Empty means text/plain for text" (even when the source_uri says .md).
    parsed = parse("# Not a heading here\n\n**bold**", "", "notes.md")
    assert parsed.mime_type == TEXT_PLAIN
    assert parsed.text == "# Not a heading here\n\n**bold**"


@pytest.mark.parametrize(
    ("mime_type", "expected"),
    [
        ("TEXT/HTML; charset=utf-8", TEXT_HTML),
        ("text/x-markdown", TEXT_MARKDOWN),
        ("application/xhtml+xml", TEXT_HTML),
        (" application/pdf ", APPLICATION_PDF),
    ],
)
def test_mime_type_spellings(mime_type: str, expected: str) -> None:
    assert resolve_mime_type(b"x", mime_type)[0] == expected


@pytest.mark.parametrize("mime_type", ["application/msword", "image/png", "text/csv"])
def test_unsupported_mime_type(mime_type: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(b"whatever", mime_type)
    assert error_of(excinfo) == (UNSUPPORTED_MIME_TYPE, "document.mime_type")
    assert excinfo.value.metadata["mime_type"] == mime_type


def test_unknown_extension_without_type_is_unsupported() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(b"PK\x03\x04 zip bytes", "", "report.docx")
    assert error_of(excinfo) == (UNSUPPORTED_MIME_TYPE, "document.mime_type")
    assert ".docx" in excinfo.value.message


# ----------------------------------------------------------------------------------------------------------------
# Markdown


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: p.name)
def test_project_markdown_renders_to_clean_text(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    parsed = parse(path.read_bytes(), "", path.name)
    assert parsed.mime_type == TEXT_MARKDOWN
    first_heading = next(line for line in source.splitlines() if line.startswith("# "))
    assert parsed.title == first_heading[2:].strip().replace("`", "").replace("**", "")
    text = parsed.text
    assert text.startswith(parsed.title)
    prose = text
    for code in sorted(re.findall(r"`([^`\n]+)`", source), key=len, reverse=True):  # inline code is verbatim
        prose = prose.replace(code, "")
    for markup in ("**", "](", "```", "|---", "<!--", "\n# ", "\n## "):
        assert markup not in prose, markup
    assert "\n\n\n" not in text
    # every fenced code line survives verbatim
    in_fence = False
    for line in source.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif in_fence and line.strip():
            assert line.rstrip() in text


def test_readme_keeps_headings_lists_code_and_link_text() -> None:
    parsed = parse((ROOT / "README.md").read_bytes(), "text/markdown")
    assert parsed.title == "lorag"
    paragraphs = parsed.text.split("\n\n")
    assert "Services" in paragraphs  # a heading becomes its own paragraph
    assert any(p.startswith("- RAG, for what the model must know now") for p in parsed.text.split("\n"))
    assert "make demo" in parsed.text
    assert "docs/architecture.md (the chassis" in parsed.text  # link text kept, link syntax dropped


MARKDOWN_SAMPLE = """\
---
title: "Field guide: alpine plants"
author: someone
---

Alpine plants
=============

Plants that grow **above the tree line**, in *harsh* conditions. See [the survey](https://example.org/survey "x")
and ![a photo of edelweiss](edelweiss.jpg).

## Adaptations

1. Low growth
2. Hairy leaves
   - reflect light
   - keep warmth
3. Deep `roots`

> Quoted remark
> over two lines.

```python
def height(plant):
    return plant.cm  # **not bold**
```

| Plant | Altitude |
|-------|---------:|
| Edelweiss | 3,400 m |
| Glacier buttercup | 4,275 m |

Line one<br>line two  
hard break, ~~struck~~ &amp; entity &copy;.

<div class="note">HTML <b>block</b> text</div>

<!-- an HTML comment -->

***

Final paragraph.
"""  # noqa: W291 - "two  " ends in Markdown's hard line break (two spaces)


def test_markdown_sample_renders_readably() -> None:
    parsed = parse(MARKDOWN_SAMPLE.encode(), "text/markdown")
    assert parsed.title == "Field guide: alpine plants"  # the front matter's title wins
    assert parsed.text == (
        "Alpine plants\n\n"
        "Plants that grow above the tree line, in harsh conditions. See the survey and a photo of edelweiss.\n\n"
        "Adaptations\n\n"
        "1. Low growth\n"
        "2. Hairy leaves\n"
        "  - reflect light\n"
        "  - keep warmth\n"
        "3. Deep roots\n\n"
        "Quoted remark over two lines.\n\n"
        "def height(plant):\n"
        "    return plant.cm  # **not bold**\n\n"
        "Plant | Altitude\n"
        "Edelweiss | 3,400 m\n"
        "Glacier buttercup | 4,275 m\n\n"
        "Line one\nline two\n"
        "hard break, struck & entity ©.\n\n"
        "HTML block text\n\n"
        "Final paragraph."
    )


def test_markdown_title_falls_back_to_first_heading() -> None:
    assert parse("intro\n\n### Minor\n\n# Major\n", "text/markdown").title == "Major"
    assert parse("intro\n\n### Minor *heading*\n", "text/markdown").title == "Minor heading"
    assert parse("no headings at all", "text/markdown").title is None


def test_markdown_thematic_break_is_not_front_matter() -> None:
    parsed = parse("---\nJust a paragraph after a rule.\n", "text/markdown")
    assert parsed.text == "Just a paragraph after a rule."


# ----------------------------------------------------------------------------------------------------------------
# HTML


HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Glacier  retreat &amp; you</title>
  <style>body { font-family: serif }</style>
  <script>window.analytics = {track() {}};</script>
</head>
<body>
  <nav><ul><li><a href="/">Home</a></li><li><a href="/about">About</a></li></ul></nav>
  <main>
    <article>
      <h1>Glaciers are   retreating</h1>
      <p>Since 1850, most  glaciers have
         <em>lost mass</em>.<br>Measurements continue.</p>
      <p hidden>Hidden draft text.</p>
      <h2>Causes</h2>
      <ul>
        <li>Warming summers</li>
        <li>Less snow
          <ol><li>in spring</li><li>in autumn</li></ol>
        </li>
      </ul>
      <pre>year  loss
1990  0.3 m
2020  1.1 m</pre>
      <table><tr><th>Glacier</th><th>Change</th></tr><tr><td>Aletsch</td><td>-3.2 km</td></tr></table>
      <div>First div</div><div>Second div</div>
      <img src="x.png" alt="A melting glacier">
      <footer>Written by the field team.</footer>
    </article>
  </main>
  <footer>&copy; 2024 Example site · <a href="/privacy">Privacy</a></footer>
  <script>console.log("tail")</script>
</body>
</html>
"""


def test_html_page_renders_text_with_block_structure() -> None:
    parsed = parse(HTML_PAGE.encode(), "text/html")
    assert parsed.mime_type == TEXT_HTML
    assert parsed.title == "Glacier retreat & you"
    assert parsed.text == (
        "Glaciers are retreating\n\n"
        "Since 1850, most glaciers have lost mass.\nMeasurements continue.\n\n"
        "Causes\n\n"
        "- Warming summers\n"
        "- Less snow\n"
        "  1. in spring\n"
        "  2. in autumn\n\n"
        "year  loss\n1990  0.3 m\n2020  1.1 m\n\n"
        "Glacier | Change\n"
        "Aletsch | -3.2 km\n\n"
        "First div\n"
        "Second div\n"
        "A melting glacier\n\n"
        "Written by the field team."
    )
    for boilerplate in ("analytics", "font-family", "Home", "Privacy", "Hidden draft", "console"):
        assert boilerplate not in parsed.text


def test_html_title_falls_back_to_first_h1() -> None:
    parsed = parse("<body><p>intro</p><h1>The <i>real</i> title</h1><p>body</p></body>", "text/html")
    assert parsed.title == "The real title"
    assert parsed.text == "intro\n\nThe real title\n\nbody"
    assert parse("<p>only a paragraph</p>", "text/html").title is None


def test_html_meta_charset_is_used_for_non_utf8_bytes() -> None:
    page = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>'
    data = (page + "<body><p>Café “quoted”</p></body></html>").encode("windows-1252")
    assert parse(data, "text/html").text == "Café “quoted”"
    with pytest.raises(InvalidArgument) as excinfo:
        parse("<p>Café</p>".encode("latin-1"), "text/html")
    assert error_of(excinfo)[0] == INVALID_ENCODING


def test_html_with_only_boilerplate_is_empty() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(
            b"<html><head><title>T</title></head><body><script>x()</script><nav>menu</nav></body></html>", "text/html"
        )
    assert error_of(excinfo) == (EMPTY_DOCUMENT, "document.data")


def test_deeply_nested_html_does_not_overflow() -> None:
    html = "<div>" * 5000 + "deep text" + "</div>" * 5000
    assert parse(html, "text/html").text == "deep text"


# ----------------------------------------------------------------------------------------------------------------
# PDF


def test_pdf_pages_are_joined_with_blank_lines() -> None:
    data = make_pdf(
        [["Page one, line one.", "Page one, line two (with parentheses)."], ["Second page text."]],
        title="Annual report",
    )
    parsed = parse(data, "application/pdf")
    assert parsed.mime_type == APPLICATION_PDF
    assert parsed.title == "Annual report"
    assert parsed.text == ("Page one, line one.\nPage one, line two (with parentheses).\n\nSecond page text.")
    assert parse(data, "", "reports/2024.pdf") == parsed
    assert parse(data, "").mime_type == APPLICATION_PDF  # sniffed from %PDF-


def test_pdf_without_title_metadata() -> None:
    assert parse(make_pdf([["Just text."]]), "application/pdf").title is None


def test_pdf_without_text_is_empty() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(InvalidArgument) as excinfo:
        parse(buffer.getvalue(), "application/pdf")
    assert error_of(excinfo) == (EMPTY_DOCUMENT, "document.data")
    assert "OCR" in excinfo.value.message


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\nthis is not really a pdf", b"\x00\x01garbage", make_pdf([["Some text."]])[:60]],
    ids=["bad-body", "garbage", "truncated"],
)
def test_corrupt_pdf_is_unparsable(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(data, "application/pdf")
    assert error_of(excinfo) == (UNPARSABLE_DOCUMENT, "document.data")


def test_pdf_sent_as_text_is_refused() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse("%PDF-1.4 ...", "application/pdf")
    assert error_of(excinfo) == (UNSUPPORTED_MIME_TYPE, "document.text")


# ----------------------------------------------------------------------------------------------------------------
# empty and too large


@pytest.mark.parametrize(
    ("content", "mime_type", "field"),
    [
        ("", "text/plain", "document.text"),
        (b"", "", "document.data"),
        (" \n\t\r\n \u00a0\n", "text/plain", "document.text"),
        ("<!-- only a comment -->\n", "text/markdown", "document.text"),
        (b"\xef\xbb\xbf", "text/plain", "document.data"),
    ],
)
def test_empty_documents(content: str | bytes, mime_type: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(content, mime_type)
    assert error_of(excinfo) == (EMPTY_DOCUMENT, field)


def test_too_large_documents_name_the_limit() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse("é" * 600, "text/plain", max_bytes=1000)  # 1,200 UTF-8 bytes
    assert error_of(excinfo) == (DOCUMENT_TOO_LARGE, "document.text")
    assert excinfo.value.metadata["limit"] == "1000"
    assert "1200 bytes" in excinfo.value.message and "1000 bytes" in excinfo.value.message
    assert parse("é" * 500, "text/plain", max_bytes=1000).text == "é" * 500
    with pytest.raises(InvalidArgument) as excinfo:
        parse(b"x" * 1001, "text/plain", max_bytes=1000)
    assert error_of(excinfo) == (DOCUMENT_TOO_LARGE, "document.data")


def test_errors_carry_a_bad_request_detail() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(b"x", "image/png")
    status = excinfo.value.to_status()
    assert status.code == 3  # INVALID_ARGUMENT
    assert len(status.details) == 2  # ErrorInfo (reason) and BadRequest (field)
