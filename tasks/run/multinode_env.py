"""What a test command needs for the MultiNode API: environment and private cache files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

CACHE_FILE = "/tmp/lava_multi_node_cache.txt"
NETWORK_CACHE_FILE = "/tmp/lava_multi_node_network_cache.txt"


def multinode_env(job: Mapping[str, Any]) -> dict[str, str]:
    """MultiNode settings of a member (or the parent): default wait timeout, cache path."""
    env: dict[str, str] = {}
    timeout = (job.get("timeouts") or {}).get("multinode")
    if timeout:
        env["CONVOY_MULTINODE_TIMEOUT"] = str(timeout)
    cache = (job.get("multinode") or {}).get("cache_file")
    if cache:
        env["CONVOY_MULTINODE_CACHE"] = str(cache)
    return env


def multinode_files(job_dir: Path, env: Mapping[str, str]) -> dict[str, Path]:
    """The job's own files at LAVA's fixed cache paths (unless the job chose its own path)."""
    if "CONVOY_MULTINODE_CACHE" in env or "CONVOY_GROUP_ID" not in env:
        return {}
    return {CACHE_FILE: job_dir / "multinode" / "cache.txt",
            NETWORK_CACHE_FILE: job_dir / "multinode" / "network-cache.txt"}
