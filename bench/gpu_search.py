"""Benchmark: a whole search at GPU speed. Runs the default search space (16 trials, its
sampler and MO-ASHA) under Ray Tune + Ray Train + MLflow, several trials per GPU
(`--gpus-per-worker`), and prints one table: trials per hour, GPU utilisation and memory
(`nvidia-smi`, sampled every second in a thread), images/s per trial and the fixed cost per
trial (wall time minus training steps, val scoring and the final curve, as bench/overhead.py
splits it). On a machine without a GPU the trials train on the CPU and the GPU columns say
"no GPU".

    python bench/gpu_search.py --check                    # validate everything, run no trial
    python bench/gpu_search.py --size 32 --trials 4 --epochs 2 --images-per-epoch 128  # CPU
    python bench/gpu_search.py --size 112 --trials 16 --gpus-per-worker 0.25            # GPU

Data: `--synthetic` (the default: synthetic faces and a small zoo trained here at `--size`,
bench/search_efficiency.py's `synthetic_problem`) or `--data D --zoo Z` (the space's aux
names are then the zoo's whole aux pool, `choices: aux`).

On a GPU machine that lacks Ray, Optuna and MLflow and has no registry (the one-GPU session):
  1. here, with network: `pip download -d wheels/ "ray[train,tune]==2.60.0" optuna mlflow-skinny
     --python-version 3.11 --only-binary=:all:` (ray's wheel may be rebuilt without ray/jars,
     about 45 MiB), and carry wheels/ with the working tree;
  2. there: `python -m venv --system-site-packages .venv && .venv/bin/pip install --no-index
     --find-links wheels/ "ray[train,tune]" optuna mlflow-skinny && .venv/bin/pip install
     --no-deps -e .` (torch comes from the machine);
  3. `PYTHONPATH=$PWD .venv/bin/python bench/gpu_search.py --check --size 112` (seconds to a
     minute: imports, nvidia-smi, the space, the GPU packing), then
     `PYTHONPATH=$PWD .venv/bin/python bench/gpu_search.py --size 112 --trials 16
     --gpus-per-worker 0.25 --out $OUT/gpu_search` and keep its table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import trial_rows  # noqa: E402
from search_efficiency import synthetic_problem  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = REPO / "search_spaces" / "default.yaml"
NO_GPU = "no GPU"


class GpuSampler:
    """`nvidia-smi` every `period` seconds in a thread: utilisation (%) and memory (MiB) of
    every GPU. No nvidia-smi: no samples, and `summary` says "no GPU"."""

    def __init__(self, period: float = 1.0) -> None:
        self.period, self.samples = period, []  # type: float, list[tuple[float, float]]
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.extend(query_gpus())

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def summary(self) -> dict[str, str]:
        if not self.samples:
            return {"gpu util": NO_GPU, "gpu memory": NO_GPU}
        util = [u for u, _ in self.samples]
        return {"gpu util": f"{sum(util) / len(util):.0f}% mean, {max(util):.0f}% max",
                "gpu memory": f"{max(m for _, m in self.samples) / 1024:.1f} GiB peak"}


def query_gpus() -> list[tuple[float, float]]:
    """(utilisation %, memory used MiB) of each GPU, from nvidia-smi; [] without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [(float(u), float(m)) for u, m in
            (line.split(",") for line in out.strip().splitlines() if line.strip())]


def space_spec(args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """The default space with the bench's budget and resources, aux choices = the zoo's."""
    spec = yaml.safe_load(DEFAULT_SPACE.read_text())
    spec["budget"] = {"trials": args.trials, "epochs": args.epochs,
                      "concurrency": args.concurrency, "final_curve": not args.no_final_curve}
    if args.scheduler:
        spec["scheduler"] = {"name": args.scheduler}
    spec["fixed"] = {**spec["fixed"], "images_per_epoch": args.images_per_epoch,
                     "amp": args.amp, "channels_last": args.channels_last}
    spec["parameters"]["aux_gender"]["choices"] = "aux"
    spec["parameters"]["aux_matcher"]["choices"] = "aux"
    res: dict[str, Any] = {"num_workers": 1, "cpus_per_worker": args.cpus_per_worker,
                           "max_failures": 1}
    if cuda:
        res.update(use_gpu=True, gpus_per_worker=args.gpus_per_worker)
    spec["resources"] = res
    return spec


def versions() -> str:
    out = []
    for pkg in ("torch", "ray", "optuna", "mlflow-skinny", "mlflow"):
        try:
            out.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def table(rows: list[dict[str, Any]], wall: float, gpu: dict[str, str], title: str) -> str:
    lines = [title, f"{'trial':<10} {'epochs':>6} {'wall s':>7} {'train s':>8} {'eval s':>7} "
             f"{'final s':>8} {'fixed s':>8} {'images/s':>9}"]
    for r in rows:
        lines.append(f"{r['trial']:<10} {r['epochs']:>6} {r['wall']:>7.1f} "
                     f"{r['train_seconds']:>8.1f} {r['eval_seconds']:>7.1f} "
                     f"{r['final_curve_seconds']:>8.1f} {r['fixed']:>8.1f} "
                     f"{r['images_per_s']:>9.0f}")
    n = max(1, len(rows))
    summary = {
        "trials finished": f"{len(rows)} in {wall:.0f} s",
        "trials per hour": f"{len(rows) / wall * 3600:.1f}" if wall else "-",
        **gpu,
        "images/s per trial": f"{sum(r['images_per_s'] for r in rows) / n:.0f} mean",
        "fixed cost per trial": f"{sum(r['fixed'] for r in rows) / n:.1f} s mean",
    }
    lines += [f"{k:<21} {v}" for k, v in summary.items()]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="validate, run no trial")
    ap.add_argument("--data")
    ap.add_argument("--zoo")
    ap.add_argument("--size", type=int, default=32, help="synthetic image size (32/64/112)")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images-per-epoch", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=0, help="0 = what the GPUs or CPUs hold")
    ap.add_argument("--gpus-per-worker", type=float, default=0.25)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--scheduler", choices=("mo_asha", "none"), default=None)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast in every trial")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-final-curve", action="store_true")
    ap.add_argument("--out", default=None, help="keep the problem, runs and table here")
    return ap.parse_args()


def main() -> None:
    import torch

    args = parse_args()
    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    if not args.concurrency:
        import os

        slots = gpus * round(1 / args.gpus_per_worker) if cuda else (os.cpu_count() or 1)
        args.concurrency = max(1, min(args.trials, int(slots), int((os.cpu_count() or 1)
                                                                   // args.cpus_per_worker)))
    device = (f"{gpus} x {torch.cuda.get_device_name()}" if cuda else f"CPU ({NO_GPU})")
    print(f"{device}; {versions()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp).absolute()
        out.mkdir(parents=True, exist_ok=True)
        if args.data and args.zoo:
            data, zoo = Path(args.data).absolute(), Path(args.zoo).absolute()
        else:
            data, zoo = synthetic_problem(out / f"problem{args.size}", size=args.size)
        space = out / "gpu_search.yaml"
        space.write_text(yaml.safe_dump(space_spec(args, cuda), sort_keys=False))
        if args.check:
            check(space, data, zoo, out)
            return
        run(args, space, data, zoo, out, device, cuda)


def check(space: Path, data: Path, zoo: Path, out: Path) -> None:
    """Everything a run would check before its first trial, and the GPU sampler."""
    from san_search.cli import main as cli

    code = cli(["search", str(space), "--data", str(data), "--zoo", str(zoo), "--check"])
    samples = query_gpus()
    print(f"nvidia-smi: {samples if samples else NO_GPU}")
    print(f"check {'passed' if code == 0 else 'FAILED'}; space {space}")
    if code:
        raise SystemExit(code)


def run(args: argparse.Namespace, space: Path, data: Path, zoo: Path, out: Path,
        device: str, cuda: bool) -> None:
    from san_search import search

    uri = f"sqlite:///{out / 'mlflow.db'}"
    name = time.strftime("gpu-%H%M%S")
    with GpuSampler() as sampler:
        t0 = time.perf_counter()
        summary = search.start(space, data, zoo, out=out / "runs", name=name,
                               tracking_uri=uri, experiment="gpu_search", log=print)
        wall = time.perf_counter() - t0
    rows = trial_rows(uri, "gpu_search", summary["parent_run_id"])
    title = (f"{device}: default space, {args.trials} trials x up to {args.epochs} epochs x "
             f"{args.images_per_epoch} images at {open_size(data)} px, {args.concurrency} at "
             f"a time, gpus_per_worker {args.gpus_per_worker if cuda else '-'}"
             f"{', bf16' if args.amp else ''}{', channels_last' if args.channels_last else ''}")
    text = table(rows, wall, sampler.summary(), title)
    print(text)
    (out / "gpu_search.txt").write_text(text + "\n")


def open_size(data: Path) -> int:
    from san_search.data import open_dataset

    return open_dataset(data).size


if __name__ == "__main__":
    main()
