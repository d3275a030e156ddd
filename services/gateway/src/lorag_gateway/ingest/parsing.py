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

The three renderers live in :mod:`.rendering`. Every result goes through :func:`normalize_text`, so the same
document gives the same text whichever way it arrives. That text is what ``char_start``/``char_end`` of chunks index
into, and what ``content_sha256`` hashes.

Errors are :class:`lorag_core.errors.InvalidArgument` with a stable reason: ``UNSUPPORTED_MIME_TYPE``,
``INVALID_ENCODING``, ``EMPTY_DOCUMENT``, ``DOCUMENT_TOO_LARGE`` and ``UNPARSABLE_DOCUMENT``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from lorag_core.errors import InvalidArgument

from .rendering import (
    DATA_FIELD,
    UNPARSABLE_DOCUMENT,
    collapse_spaces,
    html_to_text,
    markdown_to_text,
    normalize_text,
    pdf_to_text,
)

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

MIME_TYPE_FIELD = "document.mime_type"
TEXT_FIELD = "document.text"


@dataclass(frozen=True)
class ParsedDocument:
    """A document's extracted text, the title its content declares (``None`` when none), and its media type."""

    text: str
    title: str | None
    mime_type: str


# --------------------------------------------------------------------------------------------------------------
# Normalisation


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
        title = normalize_text(collapse_spaces(title)) or None
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
