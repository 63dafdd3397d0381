"""The local Ray our commands start listens on loopback only (issue 16: it listened on every
address for its gRPC ports: GCS, raylet, object manager, workers)."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from san_search.raylocal import SINGLE_MACHINE_ENV, names_cluster, start_ray


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from /proc (Ray's processes are our children)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        parent[int(stat.parent.name)] = int(fields[1])
    found, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= new
        grew = bool(new)
    return found


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process name) of every listening TCP socket that `pids` own."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        owners = re.findall(r'\("([^"]+)",pid=(\d+)', line)
        names = [name for name, pid in owners if int(pid) in pids]
        if names:
            rows.append((line.split()[3], names[0]))
    return rows


def is_loopback(local_address: str) -> bool:
    """`ss`'s local address ("127.0.0.1:80", "[::ffff:127.0.0.1]:80", "*:80", "[::]:80")."""
    host = local_address.rsplit(":", 1)[0].strip("[]").split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # "*": every address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_is_loopback_reads_ss_addresses() -> None:
    assert is_loopback("127.0.0.1:6379")
    assert is_loopback("[::1]:6379")
    assert is_loopback("[::ffff:127.0.0.1]:45813")
    assert not is_loopback("*:41383")
    assert not is_loopback("0.0.0.0:6379")
    assert not is_loopback("[::]:6379")
    assert not is_loopback("192.0.2.2:46731")


def test_only_a_named_cluster_is_attached() -> None:
    assert not names_cluster(None)
    assert not names_cluster("")
    assert not names_cluster("local")
    assert names_cluster("auto")
    assert names_cluster("10.0.0.5:6379")
    assert names_cluster("ray://head:10001")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or shutil.which("ss") is None,
                    reason="reads /proc and `ss -ltnp` (Linux)")
def test_local_ray_listens_on_loopback_only() -> None:
    import ray

    env_before = os.environ.get(SINGLE_MACHINE_ENV)
    assert start_ray(None, log_to_driver=False) is True
    try:
        assert start_ray(None) is False  # already running: not started twice
        assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker, with its own port
        sockets = _listening(_descendants(os.getpid()))
    finally:
        ray.shutdown()
    names = {name for _, name in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the listing found Ray's servers
    exposed = [(addr, name) for addr, name in sockets if not is_loopback(addr)]
    assert exposed == [], f"Ray listens beyond loopback: {exposed}"
    # What the local Ray needed is undone: a later `--ray-address` attach is unaffected.
    assert os.environ.get(SINGLE_MACHINE_ENV) == env_before
