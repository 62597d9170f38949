"""The pid 1 of an emulated device's sandbox (stdlib only: run as ``python -I -S sandbox_init.py SPEC``).

:mod:`convoy.connectors.emulated.sandbox` starts it under ``unshare`` in
new mount, UTS, IPC, network and pid namespaces.  It builds the device's
root (a copy-on-write overlay of the host's ``/`` whose upper layer lives
on a tmpfs of this mount namespace, so every write vanishes with the
sandbox), pivots into it, reports ``pid <host pid>`` and ``ready`` on the
report pipe, then reaps orphans until its farm goes (EOF on the watch
pipe) or it is killed.  When it ends, the kernel kills every process of
the device's pid namespace: that is how a device "reboots".

SPEC is JSON: ``hostname``, ``scratch`` (an empty directory to mount the
tmpfs on), ``home`` (bind-mounted read-write at the same path), ``masks``
(paths hidden under an empty tmpfs), ``report_fd``, ``watch_fd``, ``packages``
(a flat apt repository on the host that becomes the device's only package
source, or null).
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import select
import signal
import subprocess
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MNT_DETACH = 2
#: where a device sees its lab's package repository (``spec["packages"]``)
LAB_PACKAGES = "/var/lib/convoy-lab-packages"
#: pivot_root(2) has no libc wrapper; else the util-linux binary is used
PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {fstype or source} on {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = PIVOT_ROOT_SYSCALL.get(platform.machine())
    if number is None:
        subprocess.run(["pivot_root", new_root, put_old], check=True)
        return
    _check(_libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()), "pivot_root")


#: the host's device nodes a device gets (no disks: its root could write them)
DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def build_dev(dev: str) -> None:
    """A minimal ``/dev``: the harmless nodes and the host's ``/dev/pts`` (the farm's PTYs live there)."""
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755")
    for name in DEVICE_NODES:
        if os.path.exists(f"/dev/{name}"):
            open(os.path.join(dev, name), "w").close()
            mount(f"/dev/{name}", os.path.join(dev, name), None, MS_BIND)
    for name in ("pts", "shm"):
        os.mkdir(os.path.join(dev, name))
    mount("/dev/pts", os.path.join(dev, "pts"), None, MS_BIND)
    mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


#: host-wide kernel knobs under /proc a device may read but not write (as container runtimes do)
READ_ONLY_PROC = ("sys", "sysrq-trigger", "irq", "bus", "fs")


def protect_proc(proc: str) -> None:
    """Make the host-wide parts of the device's ``/proc`` read-only (``echo b > /proc/sysrq-trigger``)."""
    for name in READ_ONLY_PROC:
        path = os.path.join(proc, name)
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(path, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def build_root(spec: dict) -> None:
    """Mount the device's view of the machine and make it this namespace's ``/``."""
    scratch = spec["scratch"]
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    upper, work, root = (os.path.join(scratch, d) for d in ("upper", "work", "root"))
    for path in (upper, work, root):
        os.mkdir(path)
    mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")

    def inside(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    build_dev(inside("/dev"))
    mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    protect_proc(inside("/proc"))
    mount("sysfs", inside("/sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", inside("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount("tmpfs", inside("/run"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for path in spec["masks"]:
        if os.path.isdir(inside(path)):
            mount("tmpfs", inside(path), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
    home = spec["home"]
    os.makedirs(inside(home), exist_ok=True)
    mount(home, inside(home), None, MS_BIND)
    if spec.get("packages"):
        use_lab_packages(root, spec["packages"])
    name = spec["hostname"].encode()
    _check(_libc.sethostname(name, ctypes.c_size_t(len(name))), "sethostname")
    name_itself(root, spec["hostname"])
    os.chdir(root)
    os.makedirs("oldroot", exist_ok=True)
    pivot_root(".", "oldroot")
    os.chdir("/")
    _check(_libc.umount2(b"/oldroot", MNT_DETACH), "umount /oldroot")
    os.rmdir("/oldroot")


def use_lab_packages(root: str, packages: str) -> None:
    """Make the lab's apt repository (read-only) the device's only package source, as an image built for a
    lab without internet has; no service starts while packages install (``policy-rc.d``, as in containers)."""
    if not any(os.path.isfile(os.path.join(packages, name)) for name in ("Packages", "Packages.gz", "Packages.xz")):
        raise OSError(f"the package repository {packages} has no Packages index (dpkg-scanpackages . > Packages)")
    target = os.path.join(root, LAB_PACKAGES.lstrip("/"))
    os.makedirs(target, exist_ok=True)
    mount(packages, target, None, MS_BIND)
    mount(packages, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    apt = os.path.join(root, "etc/apt")
    os.makedirs(os.path.join(apt, "sources.list.d"), exist_ok=True)
    for name in os.listdir(os.path.join(apt, "sources.list.d")):  # whited out in the overlay only
        os.remove(os.path.join(apt, "sources.list.d", name))
    with open(os.path.join(apt, "sources.list"), "w") as handle:
        handle.write(f"# the lab's package repository (convoy's emulated device config.packages)\n"
                     f"deb [trusted=yes] file:{LAB_PACKAGES} ./\n")
    os.makedirs(os.path.join(apt, "apt.conf.d"), exist_ok=True)
    with open(os.path.join(apt, "apt.conf.d", "99convoy-lab"), "w") as handle:
        # apt's download methods run as root: the device's root lacks the capabilities apt's _apt user
        # switch expects of its list directories (as in chroots and containers)
        handle.write('APT::Sandbox::User "root";\n')
    policy = os.path.join(root, "usr/sbin/policy-rc.d")
    with open(policy, "w") as handle:
        handle.write("#!/bin/sh\n# a device being installed starts no service (convoy's sandbox)\nexit 101\n")
    os.chmod(policy, 0o755)


def name_itself(root: str, hostname: str) -> None:
    """``/etc/hostname`` and an ``/etc/hosts`` line, as an installed machine has (in the overlay only)."""
    with open(os.path.join(root, "etc/hostname"), "w") as handle:
        handle.write(hostname + "\n")
    with open(os.path.join(root, "etc/hosts"), "a") as handle:
        handle.write(f"127.0.1.1\t{hostname}\n")


def reap_until_orphaned(watch_fd: int) -> None:
    """Reap every child until the watch pipe reports EOF (the farm is gone); SIGKILL ends it sooner."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    while True:
        readable, _, _ = select.select([watch_fd, wake_r], [], [])
        if watch_fd in readable and not os.read(watch_fd, 64):
            return
        if wake_r in readable:
            os.read(wake_r, 4096)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break


def main() -> None:
    spec = json.loads(sys.argv[1])
    report = spec["report_fd"]
    try:
        host_pid = int(os.readlink("/proc/self"))  # the host's procfs, before ours is mounted
        os.write(report, f"pid {host_pid}\n".encode())
        build_root(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the farm, which names the device
        os.write(report, f"error {exc}\n".encode())
        os._exit(1)
    os.write(report, b"ready\n")
    os.close(report)
    reap_until_orphaned(spec["watch_fd"])
    os._exit(0)


if __name__ == "__main__":
    main()
