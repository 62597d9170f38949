"""Packing a job's artifacts/ and unpacking it safely (real files in a temporary directory, no Redis)."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from convoy.tasks.run.artifacts import ARTIFACTS_DIR, pack_artifacts, unpack_artifacts


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return sorted(tar.getnames())


def test_no_artifacts_directory_is_fine(tmp_path: Path) -> None:
    packed = pack_artifacts(tmp_path, 1 << 20)
    assert packed.data is None and packed.note.startswith("none")


def test_artifacts_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / ARTIFACTS_DIR).write_text("a file, not a directory")
    packed = pack_artifacts(tmp_path, 1 << 20)
    assert packed.data is None and "not a directory" in packed.note


def test_artifacts_a_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("s")
    (tmp_path / ARTIFACTS_DIR).symlink_to(tmp_path / "elsewhere")
    assert pack_artifacts(tmp_path, 1 << 20).data is None


def test_regular_files_and_directories_packed_links_and_fifos_named(tmp_path: Path) -> None:
    root = tmp_path / ARTIFACTS_DIR
    (root / "logs" / "deep").mkdir(parents=True)
    (root / "report.txt").write_text("passed\n")
    (root / "logs" / "deep" / "dmesg").write_bytes(b"\x00\x01binary")
    (root / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo")
    packed = pack_artifacts(tmp_path, 1 << 20)
    assert packed.data is not None and packed.files == 2 and packed.note.startswith("stored: 2 file(s)")
    assert sorted(packed.skipped) == ["artifacts/fifo", "artifacts/passwd"]
    assert _names(packed.data) == ["artifacts", "artifacts/logs", "artifacts/logs/deep",
                                   "artifacts/logs/deep/dmesg", "artifacts/report.txt"]
    out = tmp_path / "out"
    unpack_artifacts(packed.data, out)
    assert (out / "artifacts" / "report.txt").read_text() == "passed\n"
    assert (out / "artifacts" / "logs" / "deep" / "dmesg").read_bytes() == b"\x00\x01binary"


def test_empty_artifacts_directory(tmp_path: Path) -> None:
    (tmp_path / ARTIFACTS_DIR).mkdir()
    packed = pack_artifacts(tmp_path, 1 << 20)
    assert packed.data is not None and packed.files == 0 and _names(packed.data) == ["artifacts"]


def test_over_the_cap_is_not_stored_and_says_so(tmp_path: Path) -> None:
    (tmp_path / ARTIFACTS_DIR).mkdir()
    (tmp_path / ARTIFACTS_DIR / "random.bin").write_bytes(os.urandom(200_000))
    packed = pack_artifacts(tmp_path, 100_000)
    assert packed.data is None
    assert packed.note.startswith("too large") and "100000 bytes" in packed.note
    assert "CONVOY_MAX_ARTIFACT_BYTES" in packed.note
    assert pack_artifacts(tmp_path, 1_000_000).data is not None  # under a larger cap: stored


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member", [
    (tarfile.TarInfo("artifacts/../../escape"), b"x"),
    (_link("artifacts/out", "/etc/passwd"), None),
    (_link("artifacts/up", "../../outside"), None),
    (_link("artifacts/hard", "/etc/passwd", tarfile.LNKTYPE), None),
    (_device("artifacts/null"), None),
], ids=["dotdot", "symlink-absolute", "symlink-outside", "hardlink-outside", "device"])
def test_unsafe_archives_are_refused(tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None]) -> None:
    target = tmp_path / "job"
    with pytest.raises(tarfile.FilterError):
        unpack_artifacts(_archive(member), target)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "outside").exists()


def test_absolute_names_land_inside_the_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside-absolute"
    unpack_artifacts(_archive((tarfile.TarInfo(str(outside)), b"x")), tmp_path / "job")
    assert not outside.exists()
    assert (tmp_path / "job" / str(outside).lstrip("/")).read_text() == "x"
