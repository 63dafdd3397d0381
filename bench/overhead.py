"""Benchmark: where a search trial's wall time goes. Runs a small real search (Ray Tune trial
-> MLflow child run; a one-worker trial trains in its Tune process, see
san_search/search/inprocess.py) and splits each trial's wall time, from its child run's start
to its end (FINISHED, after the final trade-off curve), into training steps
(`train_seconds`), per-epoch val scoring (`eval_seconds`), scoring the final curve
(`final_curve_seconds`) and the fixed cost: everything else (process start-up, imports,
opening the data and zoo, checkpoints, reports, MLflow).

    python bench/overhead.py --synthetic [--trials 4 --epochs 3 --images-per-epoch 256]
    python bench/overhead.py --data D --zoo Z

Prints one line per trial and the share outside training steps (a ratio of times measured in
the same run, so it holds on a noisy machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import SYNTHETIC_SPACE, synthetic_problem  # noqa: E402

from san_search import search, tracking  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--zoo")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images-per-epoch", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp).absolute()
        out.mkdir(parents=True, exist_ok=True)
        if args.synthetic:
            data, zoo = synthetic_problem(out / "problem")
        elif args.data and args.zoo:
            data, zoo = Path(args.data).absolute(), Path(args.zoo).absolute()
        else:
            ap.error("give --synthetic, or --data and --zoo")
        spec = dict(SYNTHETIC_SPACE)
        spec["budget"] = {"trials": args.trials, "epochs": args.epochs,
                          "concurrency": args.concurrency}
        spec["scheduler"] = {"name": "none"}
        spec["fixed"] = {**spec["fixed"], "images_per_epoch": args.images_per_epoch}
        path = out / "overhead.yaml"
        path.write_text(yaml.safe_dump(spec))
        uri = f"sqlite:///{out / 'mlflow.db'}"
        summary = search.start(path, data, zoo, out=out / "runs", name="overhead",
                               tracking_uri=uri, experiment="overhead", log=lambda _: None)
        client = MlflowClient(uri)
        runs = tracking.child_runs(uri, client.get_experiment_by_name("overhead").experiment_id,
                               summary["parent_run_id"])
        print(f"{'trial':<10} {'wall s':>7} {'train s':>8} {'eval s':>7} "
              f"{'final curve s':>13} {'fixed s':>8} {'outside train':>13}")
        tot = dict.fromkeys(("wall", "train", "eval", "final"), 0.0)
        for run in sorted(runs, key=lambda r: r.info.start_time):
            rid = run.info.run_id
            got = {k: sum(m.value for m in client.get_metric_history(rid, k))
                   for k in ("train_seconds", "eval_seconds", "final_curve_seconds")}
            if not got["train_seconds"] or not run.info.end_time:
                continue
            row = {"wall": (run.info.end_time - run.info.start_time) / 1000,
                   "train": got["train_seconds"], "eval": got["eval_seconds"],
                   "final": got["final_curve_seconds"]}
            for k, v in row.items():
                tot[k] += v
            print(_line(run.data.tags["san_search.trial_id"], row))
        print(_line("all", tot))
        n = max(1, len(runs))
        print(f"fixed cost per trial: {_fixed(tot) / n:.1f} s (mean of {len(runs)})")
        print(f"({args.trials} trials x {args.epochs} epochs x {args.images_per_epoch} images, "
              f"{args.concurrency} at a time; data {data})")


def _fixed(row: dict[str, float]) -> float:
    return row["wall"] - row["train"] - row["eval"] - row["final"]


def _line(name: str, row: dict[str, float]) -> str:
    return (f"{name:<10} {row['wall']:>7.1f} {row['train']:>8.1f} {row['eval']:>7.1f} "
            f"{row['final']:>13.1f} {_fixed(row):>8.1f} {1 - row['train'] / row['wall']:>13.1%}")


if __name__ == "__main__":
    main()
