"""Benchmark: what the search strategy buys on a fixed compute budget.

Random search, TPE, and TPE with MO-ASHA early stopping each get the same number of
trial-epochs (every epoch any trial trains counts; the search stops when the budget is spent)
and several sampler seeds. The figure of merit is the hypervolume of the feasible val front
(privacy x utility above the (0, 0) corner). Runs real searches: Ray Tune trials on Ray
Train, MLflow runs in a throw-away SQLite store.

    python bench/search_efficiency.py --synthetic                   # builds its own problem
    python bench/search_efficiency.py --data D --zoo Z --space search_spaces/cpu32.yaml \\
        --budget 8 --epochs 2 --images-per-epoch 500

Prints one line per search and a summary table (mean and spread over seeds). Also writes
the table as JSON next to the runs (--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from san_search import search

HERE = Path(__file__).resolve().parent
METHODS = {  # name -> (sampler, scheduler)
    "random": ("random", "none"),
    "tpe": ("tpe", "none"),
    "tpe+mo_asha": ("tpe", "mo_asha"),
}


def synthetic_problem(root: Path, size: int = 32) -> tuple[Path, Path]:
    """A synthetic dataset and a small zoo (aux and val models), trained without Ray."""
    from safetensors.torch import save

    from san_search.config import ModelSpec
    from san_search.data import BuildOptions, synth
    from san_search.zoo.store import add_model, train_model

    data, zoo = root / "data", root / "zoo"
    if (zoo / "zoo.json").is_file():
        return data, zoo
    synth(data, identities=160, images_per_identity=6, size=size,
          options=BuildOptions(pairs=400))
    specs = [("g_aux_cnn", "gender", "paper_cnn", "aux", 3),
             ("g_aux_wide", "gender", "paper_cnn_wide", "aux", 3),
             ("g_val_regnetx", "gender", "regnetx_002", "val", 3),
             ("m_aux_resnet10t", "matcher", "resnet10t", "aux", 5),
             ("m_val_regnetx", "matcher", "regnetx_002", "val", 5)]
    for name, kind, arch, role, epochs in specs:
        spec = ModelSpec(name=name, kind=kind, arch=arch, role=role, epochs=epochs, cpus=1.0)
        model, meta = train_model(spec, data, log=lambda _: None)
        add_model(zoo, save(model.state_dict()), meta, str(data))
    return data, zoo


SYNTHETIC_SPACE = {
    "description": "search-efficiency benchmark on synthetic faces",
    "constraints": [{"metric": "val_ssim", "min": 0.3}],
    "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 3}},
    "scheduler": {"name": "mo_asha", "grace_epochs": 1, "reduction_factor": 2},
    "budget": {"trials": 100, "epochs": 2, "concurrency": 2},
    "resources": {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
    "fixed": {"autoencoder": "san_conv", "skip": True, "batch_size": 32,
              "images_per_epoch": 256},
    "parameters": {
        "depth": {"type": "int", "low": 1, "high": 2},
        "width": {"type": "int", "low": 4, "high": 16, "step": 4},
        "w_rec": {"type": "log_float", "low": 0.3, "high": 30.0},
        "w_gender": {"type": "log_float", "low": 0.1, "high": 10.0},
        "w_matcher": {"type": "log_float", "low": 0.1, "high": 10.0},
        "aux_gender": {"type": "subset", "choices": "aux", "min_size": 1, "max_size": 2},
        "aux_matcher": {"type": "categorical", "choices": "aux"},
        "lr": {"type": "log_float", "low": 0.0003, "high": 0.01},
        "matcher_warmup": {"type": "int", "low": 0, "high": 1},
    },
}


def run(space: Path, data: Path, zoo: Path, out: Path, methods: list[str], seeds: list[int],
        budget: int, epochs: int | None, images: int | None) -> list[dict[str, Any]]:
    rows = []
    base = yaml.safe_load(space.read_text())
    for method in methods:
        sampler, scheduler = METHODS[method]
        for seed in seeds:
            spec = json.loads(json.dumps(base))
            # The final curve of each trial is not used here (the front is read from the
            # trials' last val metrics): skipping it halves the wall time, not the result.
            spec.setdefault("budget", {}).update(trials=1000, trial_epochs=budget,
                                                 final_curve=False)
            if epochs:
                spec["budget"]["epochs"] = epochs
            if images:
                spec.setdefault("fixed", {})["images_per_epoch"] = images
            opts = (spec.get("sampler") or {}).get("options") if sampler == "tpe" else None
            spec["sampler"] = {"name": sampler, "seed": seed, "options": opts}
            spec.setdefault("scheduler", {})["name"] = scheduler
            path = out / f"{method}-{seed}.yaml"
            path.write_text(yaml.safe_dump(spec))
            t0 = time.perf_counter()
            summary = search.start(path, data, zoo, out=out / "runs",
                                   name=f"{method.replace('+', '-')}-s{seed}",
                                   tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
                                   experiment="search-efficiency", log=lambda _: None)
            wall = time.perf_counter() - t0
            done = [r for r in summary["rows"] if r["epoch"] > 0]
            row = {"method": method, "seed": seed, "hypervolume": summary["hypervolume"],
                   "trials": len(done), "trial_epochs": sum(r["epoch"] for r in done),
                   "front": sum(r["on_front"] for r in summary["rows"]),
                   "feasible": sum(r["feasible"] for r in done), "wall_s": wall}
            rows.append(row)
            print(f"{method:<12} seed {seed}: hypervolume {row['hypervolume']:.4f}, "
                  f"{row['trials']} trials / {row['trial_epochs']} trial-epochs, "
                  f"{row['feasible']} feasible, front {row['front']}, {wall:.0f} s", flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'method':<12} {'hypervolume mean':>16} {'sd':>7} {'min':>7} {'max':>7} "
             f"{'trials':>7} {'ratio vs random':>15}"]
    base = statistics.mean(r["hypervolume"] for r in rows if r["method"] == "random") \
        if any(r["method"] == "random" for r in rows) else float("nan")
    for method in dict.fromkeys(r["method"] for r in rows):
        hv = [r["hypervolume"] for r in rows if r["method"] == method]
        trials = statistics.mean(r["trials"] for r in rows if r["method"] == method)
        sd = statistics.stdev(hv) if len(hv) > 1 else 0.0
        ratio = statistics.mean(hv) / base if base and base == base else float("nan")
        lines.append(f"{method:<12} {statistics.mean(hv):>16.4f} {sd:>7.4f} {min(hv):>7.4f} "
                     f"{max(hv):>7.4f} {trials:>7.1f} {ratio:>15.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="build and use a synthetic problem")
    ap.add_argument("--data", help="prepared dataset (with --zoo)")
    ap.add_argument("--zoo", help="zoo folder")
    ap.add_argument("--space", help="base search space (default: a built-in synthetic one)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=16, help="trial-epochs per search (16)")
    ap.add_argument("--epochs", type=int, default=None, help="override budget.epochs")
    ap.add_argument("--images-per-epoch", type=int, default=None)
    ap.add_argument("--out", default=None, help="keep runs here (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp).absolute()
        out.mkdir(parents=True, exist_ok=True)
        if args.synthetic:
            data, zoo = synthetic_problem(out / "problem")
        elif args.data and args.zoo:
            data, zoo = Path(args.data).absolute(), Path(args.zoo).absolute()
        else:
            ap.error("give --synthetic, or --data and --zoo")
        space = Path(args.space) if args.space else out / "synthetic.yaml"
        if not args.space:
            space.write_text(yaml.safe_dump(SYNTHETIC_SPACE))
        rows = run(space, data, zoo, out, args.methods.split(","),
                   [int(s) for s in args.seeds.split(",")], args.budget, args.epochs,
                   args.images_per_epoch)
        print(f"\nsame budget: {args.budget} trial-epochs per search; data {data}")
        print(table(rows))
        (out / "search_efficiency.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
