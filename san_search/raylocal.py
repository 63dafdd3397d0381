"""Starting Ray for our commands: the one place that calls `ray.init`.

`search`, `zoo train`, `train` and `demo` either attach to the cluster `--ray-address` names or
start a Ray of their own for this process (`address="local"`: never a stray cluster found on
the machine). That local Ray listens on loopback only.

Why not `ray.init(_node_ip_address="127.0.0.1")`: Ray 2.60 turns a loopback node address into
the machine's outward IP, and its gRPC servers (GCS, raylet and object manager, every worker)
then listen on all addresses. They bind the node's IP when Ray runs as a single-machine Ray,
whose node IP is loopback: Ray's own switch for that is `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`
(its default on Windows and macOS). Ray reads it when first imported, so the driver's copy is
set too, for the start only; the processes Ray starts inherit the variable."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

LOCAL = "local"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def names_cluster(address: str | None) -> bool:
    """True when `address` asks for an existing cluster ("auto", "host:port", "ray://...");
    None, "" and "local" start a Ray of our own."""
    return address not in (None, "", LOCAL)


def start_ray(address: str | None = None, *, log_to_driver: bool = True) -> bool:
    """Ray for this process, unless it already runs: the cluster `address` names, or a local
    Ray on loopback. True when this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    with _keep_sigterm_handler():
        if names_cluster(address):
            ray.init(address=address, include_dashboard=False, configure_logging=False,
                     log_to_driver=log_to_driver)
        else:
            with _single_machine():
                ray.init(address=LOCAL, include_dashboard=False, configure_logging=False,
                         log_to_driver=log_to_driver)
    return True


@contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """`ray.init` installs its own SIGTERM handler in the driver, which kills it on the spot.
    The CLI's handler (SIGTERM ends a command as Ctrl-C does: a search marks its runs KILLED
    with the resume command) is put back, when there is one and this is the main thread."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and callable(before):
            signal.signal(signal.SIGTERM, before)


@contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode while a local Ray starts; the settings come back after, so a
    later attach to a cluster in this process still finds this node's outward IP."""
    from ray._private import ray_constants

    saved_env = os.environ.get(SINGLE_MACHINE_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env
