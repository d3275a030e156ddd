"""Folder ingestion logic for ``lorag ingest PATH`` and ``lorag sync PATH``: which files, with which ids, and the
plan that brings an index in line with a folder.

- :func:`iter_folder` walks a folder (or takes a single file) and yields a :class:`FolderFile` per supported file
  (``.txt``, ``.md``, ``.markdown``, ``.html``, ``.htm``, ``.pdf``, any case), in sorted path order, skipping
  hidden files and folders (names starting with ``.``) and not following symbolic links to folders. A file's
  document id and source_uri are its path relative to the folder, with ``/`` separators (a single file: its name),
  so the same tree ingested from anywhere gets the same ids.
- The gateway decides what changed: it hashes each document as it parses it and writes nothing for an unchanged
  one, so ``sync`` sends every file and then deletes the indexed documents that are gone from the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# What lorag ingests, by extension (the gateway resolves the same table from a document's source_uri).
EXTENSION_MIME_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


@dataclass(frozen=True)
class FolderFile:
    """One supported file of a folder: its document id (= source_uri, the relative path), content and type."""

    document_id: str
    source_uri: str
    path: Path
    data: bytes
    mime_type: str


def supported_mime_type(path: str | Path) -> str | None:
    """The media type a file's extension implies, or ``None`` when lorag does not ingest that kind of file."""
    return EXTENSION_MIME_TYPES.get(Path(path).suffix.lower())


def _hidden(name: str) -> bool:
    return name.startswith(".")


def iter_folder_paths(root: str | Path) -> Iterator[tuple[str, Path, str]]:
    """``(relative posix path, path, mime type)`` for each supported file under ``root``, sorted, without
    reading the files. ``root`` may be a single file (which is yielded even if hidden, when supported)."""
    root = Path(root)
    if root.is_file():
        mime = supported_mime_type(root)
        if mime is not None:
            yield root.name, root, mime
        return
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: {root}")
    found: list[tuple[str, Path, str]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in filenames:
            if _hidden(name):
                continue
            mime = supported_mime_type(name)
            if mime is None:
                continue
            path = Path(directory) / name
            if not path.is_file():  # a broken link, a socket
                continue
            found.append((path.relative_to(root).as_posix(), path, mime))
    found.sort(key=lambda item: item[0])
    yield from found


def iter_folder(root: str | Path) -> Iterator[FolderFile]:
    """A :class:`FolderFile` for each supported file under ``root`` (or ``root`` itself when it is a file), in
    sorted relative-path order; each file is read when its turn comes."""
    for relative, path, mime in iter_folder_paths(root):
        yield FolderFile(document_id=relative, source_uri=relative, path=path, data=path.read_bytes(), mime_type=mime)


def removed(local_ids: Iterable[str], indexed_ids: Iterable[str]) -> list[str]:
    """The indexed document ids a folder no longer has (what ``lorag sync`` deletes), sorted."""
    local = set(local_ids)
    return sorted(i for i in indexed_ids if i not in local)


__all__ = ["EXTENSION_MIME_TYPES", "FolderFile", "iter_folder", "iter_folder_paths", "removed", "supported_mime_type"]
