"""A Ray worker-process setup hook for the fake-GPU tests: every worker of the job behaves
as a CPU-only node (`torch.cuda.is_available()` is False, even on a machine with a GPU) and
fails loudly the moment anything initialises CUDA. Train workers also record, as JSON lines
in the folder `RECORD_ENV` names, the GPU share Ray assigned them, the device the trial chose
(and the one Ray's `get_device` would have chosen), and when each epoch ended."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

RECORD_ENV = "SAN_SEARCH_TEST_GPU_RECORD"
HOOK = "tests.gpu_guard.cpu_only_node"


class CudaTouched(RuntimeError):
    pass


def _record(event: dict[str, Any]) -> None:
    folder = os.environ.get(RECORD_ENV)
    if folder:
        with (Path(folder) / f"{os.getpid()}.jsonl").open("a") as f:
            f.write(json.dumps({"pid": os.getpid(), "time": time.time(), **event}) + "\n")


def _trial() -> str | None:
    """The Tune trial this process is running, if any."""
    try:
        import ray.tune

        return str(ray.tune.get_context().get_trial_id())
    except Exception:  # noqa: BLE001 - outside a Tune trial
        return None


def cpu_only_node() -> None:
    import torch

    import san_search.training.device
    import san_search.training.trainer

    def refuse(*_a: Any, **_k: Any) -> None:
        raise CudaTouched("CUDA was initialised on a CPU-only node")

    torch.cuda.is_available = lambda: False  # type: ignore[assignment]
    torch.cuda._lazy_init = refuse  # type: ignore[assignment]  # every CUDA tensor needs it
    choose = san_search.training.device.choose_device
    run_epoch = san_search.training.trainer._run_epoch

    def recording_choose(train_worker: bool = True) -> torch.device:
        import ray

        device = choose(train_worker)
        if train_worker:  # what Ray Train's own get_device would have trained on
            import ray.train.torch

            naive = str(ray.train.torch.get_device())
        else:  # a trial in its own process: "cuda" wherever Ray assigned a GPU
            naive = "cuda" if ray.get_gpu_ids() else "cpu"
        _record({"event": "device", "device": str(device), "ray_device": naive,
                 "trial": _trial(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                 "assigned": ray.get_runtime_context().get_assigned_resources()})
        return device

    def recording_epoch(trainer: Any, rank: int) -> dict[str, Any]:
        out = run_epoch(trainer, rank)
        tensors = [*trainer.model.parameters(), *trainer.matcher.parameters(),
                   *(p for g in trainer.genders for p in g.parameters())]
        _record({"event": "epoch", "trial": _trial(),
                 "devices": sorted({t.device.type for t in tensors})})
        return out

    san_search.training.device.choose_device = recording_choose  # type: ignore[assignment]
    san_search.training.trainer.choose_device = recording_choose  # type: ignore[attr-defined]
    san_search.training.trainer._run_epoch = recording_epoch  # type: ignore[assignment]
