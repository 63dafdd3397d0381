"""Chaos benchmark: a small search killed at a random moment, then resumed until it ends;
does every trial still end once, at its last epoch, with no run left RUNNING?

Each case starts a real search (CPU, Ray Tune + Ray Train, a throw-away SQLite MLflow store,
all in a temporary folder) as its own process, sends a signal at a random time, then runs
`san-search search --resume` until it exits 0. Signals are sent as they arrive in practice:
SIGTERM to the driver alone (`kill PID`, a scheduler), SIGINT to the driver's process group
(Ctrl-C in a terminal), SIGKILL to the group (a crashed or OOM-killed session).

    python bench/chaos.py                          # 5 kills per signal, seed 0
    python bench/chaos.py --repeats 1 --signals SIGTERM,SIGKILL --seed 3

Kill times are drawn uniformly from [--earliest, --window]; the window defaults to 80% of
an uninterrupted search's length (measured first, once: the "clean" row), since a search
often runs faster than that and a kill after its end tests nothing. A case whose search
ended before its kill time draws a new time (up to 3 draws) and shows "ended" if none hit.
Prints one line per case and a table; exits 1 unless every case has 0 trials lost, 0
duplicated and 0 runs left RUNNING:
  lost        trials of the budget without a FINISHED, finalised child run whose final curve
              scored its last epoch's checkpoint and whose summary row is at its last epoch
  duplicated  a trial id twice in summary.json, two child runs for one trial, or a child
              run of no trial in the summary
  RUNNING     child or parent runs still RUNNING once the search has ended
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}
EXPERIMENT = "san-search"


def space_text(trials: int, epochs: int, concurrency: int) -> str:
    """A tiny space whose trials all run their full epochs (no early stopping), so that
    "its last epoch" is the budget's for every trial."""
    return (
        "sampler: {name: random, seed: 0}\n"
        "scheduler: {name: none}\n"
        f"budget: {{trials: {trials}, epochs: {epochs}, concurrency: {concurrency}}}\n"
        "resources: {num_workers: 1, cpus_per_worker: 0.5, max_failures: 1}\n"
        "fixed: {autoencoder: san_conv, depth: 1, width: 4, batch_size: 16,\n"
        "        images_per_epoch: 64, matcher_warmup: 0}\n"
        "parameters:\n"
        "  w_rec: {type: float, low: 1.0, high: 10.0}\n"
        "  aux_gender: {type: subset, choices: aux, max_size: 1}\n"
        "  aux_matcher: {type: categorical, choices: aux}\n")


def tiny_problem(root: Path) -> tuple[Path, Path]:
    """A 16 px synthetic dataset and a zoo of one-epoch models, trained without Ray."""
    from safetensors.torch import save

    from san_search.config import ModelSpec
    from san_search.data import BuildOptions, synth
    from san_search.zoo.store import add_model, train_model

    data, zoo = root / "data", root / "zoo"
    synth(data, identities=40, images_per_identity=6, size=16, options=BuildOptions(pairs=60))
    for name, kind, arch, role in [
            ("g_aux", "gender", "paper_cnn", "aux"), ("g_val", "gender", "paper_cnn", "val"),
            ("m_aux", "matcher", "regnetx_002", "aux"), ("m_val", "matcher", "resnet10t", "val")]:
        spec = ModelSpec(name=name, kind=kind, arch=arch, role=role,  # type: ignore[arg-type]
                         epochs=1, batch_size=32, images_per_epoch=96, cpus=1.0)
        model, meta = train_model(spec, data, log=lambda _: None)
        add_model(zoo, save(model.state_dict()), meta, str(data))
    return data, zoo


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever the driver left of its process group (the local Ray it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run(cmd: list[str], env: dict[str, str], log: Path, kill_at: float | None,
         sig: signal.Signals | None) -> tuple[int, float | None]:
    """Run `cmd` in its own session; with `kill_at`, send `sig` that many seconds in.
    Returns (exit code, seconds at which the signal went; None if it ended before)."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        # SIGINT back to its default: started from a background shell (nohup, `&`) the
        # search would inherit it ignored, and a SIGINT case would test nothing
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_default_sigint)
        t0, sent = time.monotonic(), None
        try:
            if kill_at is not None and sig is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=kill_at)
                if proc.poll() is None:
                    sent = time.monotonic() - t0
                    if sig == signal.SIGTERM:
                        proc.send_signal(sig)  # `kill PID`: the driver alone
                    else:
                        os.killpg(proc.pid, sig)  # Ctrl-C's group, or everything at once
            rc = proc.wait(timeout=1800)
        finally:
            _stop_group(proc)
    time.sleep(2)  # processes of a killed cluster notice their raylet is gone
    return rc, sent


def audit(uri: str, folder: Path, trials: int, epochs: int) -> dict[str, int]:
    """Trials lost, duplicated, and runs left RUNNING, from MLflow and summary.json."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=10000) if exp else []
    parents = [r for r in runs if r.data.tags.get("san_search.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    summary_file = folder / "summary.json"
    rows = json.loads(summary_file.read_text())["rows"] if summary_file.is_file() else []
    row_ids = Counter(str(r["trial_id"]) for r in rows)
    child_ids = Counter(c.data.tags.get("san_search.trial_id", "") for c in children)
    duplicated = (sum(n - 1 for n in row_ids.values()) + sum(n - 1 for n in child_ids.values())
                  + sum(1 for t in child_ids if t not in row_ids))
    running = sum(r.info.status == "RUNNING" for r in [*parents, *children])
    by_id = {c.data.tags.get("san_search.trial_id"): c for c in children}
    complete = 0
    for tid in row_ids:
        row = next(r for r in rows if str(r["trial_id"]) == tid)
        child = by_id.get(tid)
        if child is None or row["epoch"] != epochs or not _finite(row.get("val_privacy_mean")):
            continue
        tags = child.data.tags
        if (child.info.status != "FINISHED" or tags.get("san_search.finalized") != "1"
                or tags.get("san_search.epochs_trained") != str(epochs)):
            continue
        scored = Path(tags.get("san_search.checkpoint", "")) / "trainer.json"
        if scored.is_file() and json.loads(scored.read_text())["epoch"] == epochs:
            complete += 1
    return {"lost": trials - complete, "duplicated": duplicated, "running": running}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def case(name: str, root: Path, data: Path, zoo: Path, space: Path, sig: signal.Signals | None,
         kill_at: float | None, trials: int, epochs: int, max_resumes: int) -> dict[str, Any]:
    """One search: started, signalled at `kill_at`, resumed until it finishes, audited."""
    uri = f"sqlite:///{root / name / 'mlflow.db'}"
    (root / name).mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "HF_HUB_OFFLINE": "1"}
    out, log = root / name / "runs", root / name / "driver.log"
    cli = [sys.executable, "-m", "san_search.cli", "search"]
    t0 = time.monotonic()
    start = [*cli, str(space), "--data", str(data), "--zoo", str(zoo), "--out", str(out),
             "--name", "s"]
    rc, sent = _run(start, env, log, kill_at, sig)
    resumes = 0
    while rc != 0 and resumes < max_resumes:
        resumes += 1
        # As the driver says: killed before the search folder existed, nothing is resumable
        # and the same command starts it again; otherwise --resume.
        again = start if not (out / "s" / "search.json").is_file() else [
            *cli, "--resume", "s", "--out", str(out)]
        rc, _ = _run(again, env, log, None, None)
    result = {"case": name, "signal": sig.name if sig else "-", "kill_s": sent,
              "resumes": resumes, "rc": rc, "wall_s": time.monotonic() - t0,
              "expected": trials, **audit(uri, out / "s", trials, epochs)}
    if rc != 0:
        print(f"{name}: the search did not finish (exit {rc}); see {log}", flush=True)
    return result


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'signal':<8} {'kill at s':>9} {'expected':>8} {'lost':>5} {'duplicated':>10} "
             f"{'RUNNING':>7} {'resumes':>7} {'exit':>4} {'wall s':>7}"]
    for r in rows:
        kill = f"{r['kill_s']:.1f}" if r["kill_s"] is not None else "ended"
        lines.append(f"{r['signal']:<8} {kill:>9} {r['expected']:>8} {r['lost']:>5} "
                     f"{r['duplicated']:>10} {r['running']:>7} {r['resumes']:>7} "
                     f"{r['rc']:>4} {r['wall_s']:>7.0f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="draws the kill times")
    ap.add_argument("--repeats", type=int, default=5, help="kills per signal")
    ap.add_argument("--signals", default=",".join(SIGNALS),
                    help="comma-separated subset of " + ",".join(SIGNALS))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--earliest", type=float, default=10.0,
                    help="no kill before this many seconds (the driver's start-up)")
    ap.add_argument("--window", type=float, default=None,
                    help="latest kill time in s (default: an uninterrupted search's length)")
    ap.add_argument("--max-resumes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="keep everything here")
    args = ap.parse_args()
    names = [s.strip().upper() for s in args.signals.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIGNALS]
    if unknown or not names:
        ap.error(f"--signals: unknown {unknown}; choose from {', '.join(SIGNALS)}")

    rng = random.Random(args.seed)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        root = args.out.absolute() if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        data, zoo = tiny_problem(root / "problem")
        space = root / "chaos.yaml"
        space.write_text(space_text(args.trials, args.epochs, args.concurrency))
        rows = []
        window = args.window
        if window is None:  # how long an uninterrupted search runs: where kills can land
            clean = case("clean", root, data, zoo, space, None, None, args.trials,
                         args.epochs, 0)
            rows.append(clean)
            window = 0.8 * clean["wall_s"]
            print(f"uninterrupted search: {clean['wall_s']:.0f} s; kills drawn in "
                  f"[{args.earliest:.0f}, {window:.0f}] s", flush=True)
        for sig_name in names:
            for i in range(args.repeats):
                for draw in range(3):  # a kill after the search's end tests nothing
                    kill_at = rng.uniform(args.earliest, max(args.earliest, window))
                    row = case(f"{sig_name.lower()}-{i}-{draw}", root, data, zoo, space,
                               SIGNALS[sig_name], kill_at, args.trials, args.epochs,
                               args.max_resumes)
                    if row["kill_s"] is not None:
                        break
                rows.append(row)
                print(table([row]).splitlines()[1], flush=True)
        print()
        print(table(rows))
        bad = [r for r in rows if r["lost"] or r["duplicated"] or r["running"] or r["rc"]]
        print(f"{len(rows)} searches, {len(bad)} with a fault; "
              f"{time.monotonic() - t_start:.0f} s in all")
        (root / "chaos.json").write_text(json.dumps(rows, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
