"""bayes_recon._atomic.atomic_write: all or nothing, by handle or by name."""

from __future__ import annotations

import pytest

from bayes_recon._atomic import atomic_write


def test_replaces_content_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write(target, lambda fh: fh.write(b"old"))
    atomic_write(target, lambda fh: fh.write(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


@pytest.mark.parametrize("by_name", [False, True])
def test_failed_write_keeps_the_old_file(tmp_path, by_name):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half_written(dest):
        if by_name:
            with open(dest, "wb") as fh:
                fh.write(b"ne")
        else:
            dest.write(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_written, by_name=by_name)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_by_name_gives_a_path_in_the_target_folder(tmp_path):
    seen = []

    def write(name):
        seen.append(name)
        with open(name, "w") as fh:
            fh.write("text")

    atomic_write(tmp_path / "b.txt", write, by_name=True)
    assert (tmp_path / "b.txt").read_text() == "text"
    assert str(tmp_path) in str(seen[0]) and seen[0] != str(tmp_path / "b.txt")
