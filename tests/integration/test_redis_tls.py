"""TLS to Redis: a real redis-server listening with TLS only (certificates made with the openssl CLI here);
every client (redis-py's, the MultiNode store's, Celery's broker and result backend) uses the
``CONVOY_REDIS_TLS_*`` settings with a ``rediss://`` URL, and a real job runs through it."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis as redis_lib

from convoy.config.settings import load_settings
from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import make_client
from convoy.tasks.celery import celery_config
from convoy.workers.embedded.cluster import EmbeddedCluster, emulated_devices
from convoy.workers.embedded.redis_server import ConvoyError, RedisServer, TlsFiles
from helpers import unique_queue

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(where: Path) -> TlsFiles:
    """A CA, and a certificate for 127.0.0.1 signed by it (used by the server and, here, the clients)."""
    where.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=convoy test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=where)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "redis.key",
             "-out", "redis.csr", cwd=where)
    (where / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "redis.crt", cwd=where)
    return TlsFiles(ca=where / "ca.crt", cert=where / "redis.crt", key=where / "redis.key")


@pytest.fixture
def tls_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is missing: no certificates for a TLS test")
    files = make_certificates(tmp_path / "tls")
    try:
        server = RedisServer(tmp_path / "redis", tls=files).start()
    except ConvoyError as exc:
        pytest.skip(f"this redis-server does not serve TLS (built without it?): {str(exc)[-300:]}")
    monkeypatch.setenv("CONVOY_REDIS_TLS_CA", str(files.ca))
    monkeypatch.setenv("CONVOY_REDIS_TLS_CERT", str(files.cert))
    monkeypatch.setenv("CONVOY_REDIS_TLS_KEY", str(files.key))
    monkeypatch.setenv("CONVOY_REDIS_URL", server.url)
    try:
        yield server, files
    finally:
        server.stop()


def test_clients_use_the_tls_settings(tls_redis):
    server, files = tls_redis
    assert server.url.startswith("rediss://")
    assert make_client(server.url).ping()
    with pytest.raises(redis_lib.ConnectionError):  # the server asks for a client certificate
        redis_lib.Redis.from_url(server.url, ssl_ca_certs=str(files.ca)).ping()
    with pytest.raises(redis_lib.ConnectionError):  # plain TCP is not served
        redis_lib.Redis.from_url(server.url.replace("rediss://", "redis://")).ping()
    conf = celery_config(load_settings())
    for name in ("broker_use_ssl", "redis_backend_use_ssl"):
        assert conf[name]["ssl_ca_certs"] == str(files.ca) and conf[name]["ssl_certfile"] == str(files.cert)


def test_a_job_runs_over_tls(tls_redis, tmp_path: Path):
    server, _files = tls_redis
    q = unique_queue("tls")
    with EmbeddedCluster(tmp_path / "cluster", emulated_devices({q: 2}, prefix=f"tls{os.getpid()}"),
                         redis_url=server.url, configure_process=False, log=lambda m: print(f"[cluster] {m}")):
        job = submit_job({"job_queue": "multi", "test_data": {"test_cmds": "echo parent-ok"},
                          "provision_data": {"jobs": [
                              {"job_queue": q, "test_data": {"test_cmds": "lava-sync both && echo child-ok"}},
                              {"job_queue": q, "test_data": {"test_cmds": "lava-sync both && echo child-ok"}}]}})
        assert wait_for_job(job, timeout=180) == "complete", job_results(job)
        assert "parent-ok" in job_results(job)["test_output"]
