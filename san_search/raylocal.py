"""Starting Ray for our commands: the one place that calls `ray.init`.

`search`, `zoo train`, `train` and `demo` either attach to the cluster `--ray-address` names or
start a Ray of their own for this process (`address="local"`: never a stray cluster found on
the machine)."""

from __future__ import annotations

LOCAL = "local"


def names_cluster(address: str | None) -> bool:
    """True when `address` asks for an existing cluster ("auto", "host:port", "ray://...");
    None, "" and "local" start a Ray of our own."""
    return address not in (None, "", LOCAL)


def start_ray(address: str | None = None, *, log_to_driver: bool = True) -> bool:
    """Ray for this process, unless it already runs: the cluster `address` names, or a local
    Ray. True when this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address if names_cluster(address) else LOCAL, include_dashboard=False,
             configure_logging=False, log_to_driver=log_to_driver)
    return True
