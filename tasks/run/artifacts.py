"""A job's artifacts: what its test commands left in ``artifacts/`` of their working directory.

Testflinger's convention: a job's test commands run in the job's directory
(``<state_dir>/jobs/<job id>/``, on the host that runs them: a device job's
on its device's host, the parent's on the coordinator) and whatever they
leave in its ``artifacts/`` directory is collected.  The process that ran
the commands packs it after the test phase (passed, failed or cancelled),
before the job ends, into a tar.gz whose entries are ``artifacts/...``
(Testflinger's archive layout), and stores it in the job's record
(:mod:`convoy.coordinator.state.artifacts`).  Hosts share no files.

Packing keeps regular files and directories only: a link or a device file
is left out and named, never followed.  An archive over the size cap
(``CONVOY_MAX_ARTIFACT_BYTES``) is not stored: the job's output and its
record say so.  :func:`unpack_artifacts` extracts with tarfile's ``data``
filter (no absolute paths, no ``..``, no links leaving the target, no
device files).  Celery-free.
"""
from __future__ import annotations

import io
import logging
import os
import socket
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from convoy.tasks.run.output import patiently

if TYPE_CHECKING:
    from convoy.coordinator.state.jobs import JobStore

log = logging.getLogger(__name__)

#: the directory of a job's working directory whose contents are collected
ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class Packed:
    """The packed ``artifacts/`` of one job: the tar.gz (None when not stored) and what happened, in words."""

    data: bytes | None
    note: str
    files: int = 0
    skipped: list[str] = field(default_factory=list)


class _CappedBuffer(io.RawIOBase):
    """Collects what the tar.gz writer writes until ``cap`` bytes; past that only counts (``over``)."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.size = 0
        self.over = False
        self._buf = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # bytes in, like BytesIO
        self.size += len(data)
        if self.size > self.cap:
            self.over = True
            self._buf = io.BytesIO()  # free what was kept: none of it is stored
        if not self.over:
            self._buf.write(data)
        return len(data)

    def getvalue(self) -> bytes:
        return self._buf.getvalue()


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """No host user names or ids in the archive."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_artifacts(job_dir: Path, max_bytes: int) -> Packed:
    """The tar.gz of ``job_dir/artifacts`` (entries ``artifacts/...``), capped at ``max_bytes`` packed."""
    root = job_dir / ARTIFACTS_DIR
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return Packed(None, f"not collected: {ARTIFACTS_DIR} is not a directory")
    if not root.is_dir():
        return Packed(None, f"none: the test commands left no {ARTIFACTS_DIR}/ directory")
    buf = _CappedBuffer(max_bytes)
    files, skipped = 0, []
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(root), arcname=ARTIFACTS_DIR, recursive=False, filter=_plain)
        for here, dirs, names in os.walk(root):  # links to directories are listed in names' place: not followed
            dirs.sort()
            rel = Path(here).relative_to(job_dir)
            for name in sorted(dirs) + sorted(names):
                path, arcname = Path(here) / name, str(rel / name)
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    skipped.append(arcname)
                    if name in dirs:
                        dirs.remove(name)
                    continue
                try:
                    tar.add(str(path), arcname=arcname, recursive=False, filter=_plain)
                except OSError as exc:  # unreadable, or gone meanwhile
                    skipped.append(f"{arcname} ({exc.strerror or exc})")
                    continue
                files += path.is_file()
                if buf.over:
                    break
            if buf.over:
                break
    if buf.over:
        return Packed(None, f"too large: {ARTIFACTS_DIR}/ packs to more than {max_bytes} bytes "
                            f"(CONVOY_MAX_ARTIFACT_BYTES); not stored", files=files, skipped=skipped)
    data = buf.getvalue()
    return Packed(data, f"stored: {files} file(s), {len(data)} bytes packed", files=files, skipped=skipped)


def upload_artifacts(store: JobStore, job_id: str, job_dir: Path, max_bytes: int,
                     out: Callable[[str], None]) -> None:
    """Pack the job's ``artifacts/`` and store it in its record; say in ``out`` what was not stored.

    Never raises: artifacts that cannot be collected are reported, and the job goes on to its cleanup.
    """
    from convoy.coordinator.state.artifacts import save_artifacts

    try:
        packed = pack_artifacts(job_dir, max_bytes)
        if packed.skipped:
            out(f"artifacts: left out (not regular files or directories, or unreadable): {', '.join(packed.skipped)}")
        if packed.data is None and not packed.note.startswith("none"):
            out(f"artifacts: {packed.note}; they stay in {job_dir / ARTIFACTS_DIR} on {socket.gethostname()} "
                "until CONVOY_KEEP_JOB_DIRS removes the job's directory")
        elif packed.data is not None:
            out(f"artifacts: {packed.note}")
        patiently(save_artifacts, store.client, job_id, packed.data, packed.note)
    except Exception as exc:  # collecting artifacts must never keep a job from its cleanup (logged above)
        log.exception("artifacts of job %s", job_id)
        out(f"artifacts: could not be collected: {exc}")
        try:
            patiently(save_artifacts, store.client, job_id, None, f"failed: {exc}")
        except Exception:  # noqa: BLE001  (Redis is gone: the output line above is all that can be said)
            pass


def unpack_artifacts(data: bytes, target: Path) -> list[str]:
    """Extract a job's tar.gz into ``target`` (it holds ``artifacts/...`` then); the names extracted.

    tarfile's ``data`` filter refuses absolute paths, ``..``, links leaving
    ``target`` and device files (:class:`tarfile.FilterError`).
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        tar.extractall(target, filter="data")
    return [m.name for m in members]
