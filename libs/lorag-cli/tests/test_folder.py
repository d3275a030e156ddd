"""Folder walking for ``lorag ingest PATH`` / ``lorag sync PATH`` and the sync plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lorag_cli.folder import iter_folder, iter_folder_paths, removed, supported_mime_type

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    files = {
        "README.md": (ROOT / "README.md").read_bytes(),
        "guides/setup.markdown": b"# Setup\n\nInstall the *tools*.\n",
        "guides/faq.HTML": b"<html><head><title>FAQ</title></head><body><p>Answers.</p></body></html>",
        "guides/old/notes.txt": "Plain notes — ünïcode.".encode(),
        "guides/page.htm": b"<p>Legacy page</p>",
        "reports/q1.pdf": b"%PDF-1.4 not really parsed here",
        "UPPER.MD": b"Upper-case extension",
        "image.png": b"\x89PNG....",
        "data.csv": b"a,b\n1,2\n",
        "no_extension": b"who knows",
        ".hidden.md": b"# hidden",
        ".git/HEAD.md": b"# inside a hidden folder",
        "guides/.drafts/wip.md": b"# draft",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_iter_folder_yields_supported_visible_files_sorted(tree: Path) -> None:
    found = list(iter_folder(tree))
    assert [f.document_id for f in found] == [
        "README.md",
        "UPPER.MD",
        "guides/faq.HTML",
        "guides/old/notes.txt",
        "guides/page.htm",
        "guides/setup.markdown",
        "reports/q1.pdf",
    ]
    by_id = {f.document_id: f for f in found}
    assert {k: f.mime_type for k, f in by_id.items()} == {
        "README.md": "text/markdown",
        "UPPER.MD": "text/markdown",
        "guides/faq.HTML": "text/html",
        "guides/old/notes.txt": "text/plain",
        "guides/page.htm": "text/html",
        "guides/setup.markdown": "text/markdown",
        "reports/q1.pdf": "application/pdf",
    }
    for f in found:
        assert f.source_uri == f.document_id
        assert f.path == tree / f.document_id
        assert f.data == f.path.read_bytes()


def test_relative_ids_do_not_depend_on_how_the_folder_is_named(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = [f.document_id for f in iter_folder(tree)]
    monkeypatch.chdir(tree.parent)
    assert [f.document_id for f in iter_folder("kb")] == absolute
    assert [f.document_id for f in iter_folder(Path("kb/../kb"))] == absolute


def test_single_file(tree: Path) -> None:
    [only] = list(iter_folder(tree / "guides" / "setup.markdown"))
    assert (only.document_id, only.source_uri, only.mime_type) == ("setup.markdown", "setup.markdown", "text/markdown")
    assert list(iter_folder(tree / "image.png")) == []


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_folder(tmp_path / "nope"))


def test_symlinked_folders_are_not_followed(tree: Path) -> None:
    try:
        os.symlink(tree, tree / "guides" / "loop", target_is_directory=True)
        os.symlink(tree / "README.md", tree / "readme-link.md")
    except OSError:
        pytest.skip("symbolic links are not available")
    ids = [relative for relative, _, _ in iter_folder_paths(tree)]
    assert not any(i.startswith("guides/loop/") for i in ids)
    assert "readme-link.md" in ids  # a link to a file is the file


def test_supported_mime_type() -> None:
    assert supported_mime_type("a/b/c.PDF") == "application/pdf"
    assert supported_mime_type("x.htm") == "text/html"
    assert supported_mime_type("x.docx") is None
    assert supported_mime_type("Makefile") is None


def test_removed_lists_indexed_ids_gone_from_the_folder() -> None:
    assert removed(["a.md", "b.md"], ["b.md", "c.md", "a.md", "d/e.txt"]) == ["c.md", "d/e.txt"]
    assert removed([], []) == []
