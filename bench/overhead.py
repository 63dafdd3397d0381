"""Benchmark: where a search trial's wall time goes. Runs a small real search (Ray Tune trial
-> Ray Train run -> MLflow child run) and splits each trial's time from its child run's start
to its last epoch into training steps (`train_seconds`), per-epoch val scoring
(`eval_seconds`) and everything else: Tune/Train actor start-up, imports, opening the data
and zoo, checkpoints and reports. The final trade-off curve (a separate Ray task) is listed
apart.

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
        print(f"{'trial':<10} {'wall s':>7} {'train s':>8} {'eval s':>7} {'other s':>8} "
              f"{'outside train':>13} {'final curve s':>13}")
        tot = {"wall": 0.0, "train": 0.0, "eval": 0.0}
        for run in sorted(runs, key=lambda r: r.info.start_time):
            rid = run.info.run_id
            train = client.get_metric_history(rid, "train_seconds")
            ev = client.get_metric_history(rid, "eval_seconds")
            if not train:
                continue
            last = max(m.timestamp for m in train + ev)
            wall = (last - run.info.start_time) / 1000
            t, e = sum(m.value for m in train), sum(m.value for m in ev)
            final = ((run.info.end_time or last) - last) / 1000
            tot["wall"] += wall
            tot["train"] += t
            tot["eval"] += e
            print(f"{run.data.tags['san_search.trial_id']:<10} {wall:>7.1f} {t:>8.1f} "
                  f"{e:>7.1f} {wall - t - e:>8.1f} {1 - t / wall:>13.1%} {final:>13.1f}")
        print(f"{'all':<10} {tot['wall']:>7.1f} {tot['train']:>8.1f} {tot['eval']:>7.1f} "
              f"{tot['wall'] - tot['train'] - tot['eval']:>8.1f} "
              f"{1 - tot['train'] / tot['wall']:>13.1%}")
        print(f"({args.trials} trials x {args.epochs} epochs x {args.images_per_epoch} images, "
              f"{args.concurrency} at a time; data {data})")


if __name__ == "__main__":
    main()
