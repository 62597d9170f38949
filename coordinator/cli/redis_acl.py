"""``convoy redis-acl``: the Redis ACL file of a lab and each role's URL (see ``coordinator/state/acl.py``)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from convoy.coordinator.cli.main import cli
from convoy.errors import ConvoyError


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600 from the start)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@cli.command("redis-acl")
@click.option("--acl-file", "acl_file", required=True, type=click.Path(dir_okay=False),
              help="The ACL file to write (redis.conf: aclfile PATH).")
@click.option("--urls-file", "urls_file", required=True, type=click.Path(dir_okay=False),
              help="Where each role's URL goes (CONVOY_REDIS_URL_WORKER=..., mode 0600); passwords already "
                   "in it are kept, missing ones generated.")
@click.option("--redis-url", "base_url", required=True,
              help="Where the lab reaches Redis, without user or password (redis://host:6379/0, rediss://...).")
def redis_acl(acl_file: str, urls_file: str, base_url: str) -> None:
    """Write the Redis ACL file for a lab (users convoy-worker, convoy-coordinator, convoy-submitter and
    convoy-server, each with only what it needs; the default user off) and the role URLs. No password is
    printed."""
    from convoy.coordinator.state import acl

    urls_path = Path(urls_file)
    passwords = acl.parse_env_lines(urls_path.read_text(encoding="utf-8")) if urls_path.exists() else {}
    kept = sorted(passwords)
    for role in acl.ROLES:
        passwords.setdefault(role, acl.new_password())
    try:
        urls = acl.role_urls(base_url, passwords)
        text = acl.render_acl(passwords, db=acl.url_db(base_url))
    except ValueError as exc:
        raise ConvoyError(str(exc)) from None
    write_private(Path(acl_file), text)
    write_private(urls_path, acl.env_lines(urls))
    click.echo(f"convoy redis-acl: users {', '.join(acl.USERS[r] for r in acl.ROLES)} in {acl_file}")
    click.echo(f"convoy redis-acl: their URLs in {urls_file} (mode 0600"
               + (f"; kept the passwords of {', '.join(kept)}" if kept else "; new passwords") + ")")
    click.echo("convoy redis-acl: give each role's URL as CONVOY_REDIS_URL (workers, coordinator, convoy server, "
               "lab-side submitters)")
