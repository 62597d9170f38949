"""A lab's package repository for sandboxed emulated devices, built the way a lab without internet builds one.

A sandboxed device's image is this machine's root, so its repository must
hold the packages its jobs install and whichever of their dependencies this
machine lacks: ``apt-get install --download-only`` computes exactly that and
fetches them from the machine's configured package sources, and the
``Packages`` index is written next to them (what ``dpkg-scanpackages``
writes, from ``dpkg-deb -f``; no dpkg-dev needed).  An emulated device's
``config.packages`` then points at the directory.
"""
from __future__ import annotations

import gzip
import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=600, check=False,
                          env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def lab_repository(dest: Path, packages: Sequence[str]) -> Path:
    """``dest`` as a flat apt repository of ``packages`` (and what they need beyond this machine)."""
    (dest / "partial").mkdir(parents=True, exist_ok=True)
    download = ("install", "--download-only", "-y", "-q", "-o", f"Dir::Cache::archives={dest}", *packages)
    done = _apt(*download)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        _apt("update", "-q")
        done = _apt(*download)
    if done.returncode != 0:
        pytest.fail(f"cannot download {' '.join(packages)} for the lab's package repository: "
                    f"{done.stderr.strip()[-600:]}")
    entries = []
    for deb in sorted(dest.glob("*.deb")):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
        data = deb.read_bytes()
        entries.append(f"{control.rstrip()}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    index = "\n".join(entries).encode()
    (dest / "Packages").write_bytes(index)
    (dest / "Packages.gz").write_bytes(gzip.compress(index, mtime=0))  # apt asks for it first
    return dest
