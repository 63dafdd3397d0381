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
from typing import Any

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
        print(f"{'trial':<10} {'wall s':>7} {'train s':>8} {'eval s':>7} "
              f"{'final curve s':>13} {'fixed s':>8} {'outside train':>13}")
        tot = dict.fromkeys(("wall", "train", "eval", "final"), 0.0)
        rows = trial_rows(uri, "overhead", summary["parent_run_id"])
        for r in rows:
            row = {"wall": r["wall"], "train": r["train_seconds"], "eval": r["eval_seconds"],
                   "final": r["final_curve_seconds"]}
            for k, v in row.items():
                tot[k] += v
            print(_line(r["trial"], row))
        print(_line("all", tot))
        print(f"fixed cost per trial: {_fixed(tot) / max(1, len(rows)):.1f} s "
              f"(mean of {len(rows)})")
        print(f"({args.trials} trials x {args.epochs} epochs x {args.images_per_epoch} images, "
              f"{args.concurrency} at a time; data {data})")


TIMES = ("train_seconds", "eval_seconds", "final_curve_seconds")


def trial_rows(uri: str, experiment: str, parent: str) -> list[dict[str, Any]]:
    """Per finished trial of a search: wall time (its child run's start to end, the final
    curve included), the TIMES, the fixed cost (the rest) and images/s. Shared with
    bench/gpu_search.py."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment).experiment_id
    rows = []
    for run in sorted(tracking.child_runs(uri, exp, parent), key=lambda r: r.info.start_time):
        rid = run.info.run_id
        row: dict[str, Any] = {k: sum(m.value for m in client.get_metric_history(rid, k))
                               for k in TIMES}
        speed = [m.value for m in client.get_metric_history(rid, "images_per_s")]
        if not row["train_seconds"] or not run.info.end_time:
            continue  # not trained, or not ended
        row["trial"] = run.data.tags.get("san_search.trial_id", rid[:8])
        row["epochs"] = len(speed)
        row["images_per_s"] = sum(speed) / len(speed)
        row["wall"] = (run.info.end_time - run.info.start_time) / 1000
        row["fixed"] = row["wall"] - sum(row[k] for k in TIMES)
        rows.append(row)
    return rows


def _fixed(row: dict[str, float]) -> float:
    return row["wall"] - row["train"] - row["eval"] - row["final"]


def _line(name: str, row: dict[str, float]) -> str:
    return (f"{name:<10} {row['wall']:>7.1f} {row['train']:>8.1f} {row['eval']:>7.1f} "
            f"{row['final']:>13.1f} {_fixed(row):>8.1f} {1 - row['train'] / row['wall']:>13.1%}")


if __name__ == "__main__":
    main()
