from __future__ import annotations

from pathlib import Path

import pytest

from vidseek.server.jobs import check_ingest_path
from vidseek.storage.errors import InvalidArgument, NotFound, PermissionDenied


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.mp4").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.mp4").write_bytes(b"x")
    (tmp_path / "root" / "link.mp4").symlink_to(tmp_path / "outside" / "secret.mp4")
    return tmp_path


def test_paths_inside_the_root_are_allowed(tree: Path):
    roots = [tree / "root"]
    assert (
        check_ingest_path(str(tree / "root" / "sub" / "a.mp4"), roots)
        == (tree / "root" / "sub" / "a.mp4").resolve()
    )
    assert check_ingest_path(str(tree / "outside" / "secret.mp4"), []).exists()


def test_dotdot_and_symlinks_out_of_the_root_are_refused(tree: Path):
    roots = [tree / "root"]
    with pytest.raises(PermissionDenied, match="outside the allowed roots"):
        check_ingest_path(
            str(tree / "root" / "sub" / ".." / ".." / "outside" / "secret.mp4"), roots
        )
    with pytest.raises(PermissionDenied):
        check_ingest_path(str(tree / "root" / "link.mp4"), roots)


def test_missing_files_and_urls_get_clear_errors(tree: Path):
    with pytest.raises(NotFound, match=r"nope\.mp4"):
        check_ingest_path(str(tree / "root" / "nope.mp4"), [])
    with pytest.raises(InvalidArgument, match="https URLs are not supported"):
        check_ingest_path("https://example.com/v.mp4", [])


def test_paths_outside_the_roots_get_one_answer_whether_or_not_they_exist(tree: Path):
    roots = [tree / "root"]
    for path in (tree / "outside" / "secret.mp4", tree / "outside" / "missing.mp4"):
        with pytest.raises(PermissionDenied, match="outside the allowed roots"):
            check_ingest_path(str(path), roots)
    with pytest.raises(NotFound):  # inside a root, a missing file is still NotFound
        check_ingest_path(str(tree / "root" / "missing.mp4"), roots)
