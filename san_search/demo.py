"""`san-search demo`: the whole product on an embedded default, in one command.

Synthetic faces (or `--data DIR`, a prepared dataset) -> a small zoo (zoos/demo.yaml) -> a
small search (`search_spaces/demo.yaml`, 8 trials) -> ensemble selection -> export and
registration -> perturbing a few sample images -> a summary of the front, the chosen
ensemble, the test table and where every output is.

MLflow: `--tracking-uri` or `$MLFLOW_TRACKING_URI` when given (checked before any work);
otherwise a local `mlflow server` on 127.0.0.1 (SQLite + local artifacts under
`<out>/mlflow/`) that keeps running after the demo so the UI can be opened; a rerun reuses it.

Layout of `--out` (runs/demo):
  data/                  the synthetic dataset (kept and reused by later runs)
  zoo/                   the demo zoo (kept; a rerun trains only what is missing)
  mlflow/                the local tracking server's database, artifacts, log, server.json
  search/<name>/         the search (one per demo run: demo-<time>)
  ensembles/<name>/      the exported ensemble (manifest, weights, ONNX, model card)
  samples/<name>/        originals/ and perturbed/ PNGs of a few test faces
  <name>-summary.txt     the printed summary
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from san_search import shipped
from san_search.console import Log
from san_search.errors import DemoError

if TYPE_CHECKING:
    from san_search.data import PreparedDataset

DEMO_SPACE = shipped.SPACES / "demo.yaml"
DEMO_ZOO = shipped.zoo_spec("demo")
SAMPLES = 8



def _step(log: Log, n: int, title: str, t0: float) -> None:
    log(f"\n=== [{n}/6] {title}  (+{time.perf_counter() - t0:.0f} s)")


def demo_space() -> Path:
    """The demo's search space (shipped beside the others in search_spaces/)."""
    if not DEMO_SPACE.is_file():
        raise DemoError(f"the demo search space is missing: {DEMO_SPACE}")
    return DEMO_SPACE


def write_samples(data: Path, dest: Path, count: int = SAMPLES) -> list[Path]:
    """A few test-split faces as input files for `perturb`: the original source files when
    the dataset's root still has them (so perturb's preprocessing applies as it would to a
    user's photos), else the prepared images as PNGs. Alternates women and men."""
    from PIL import Image

    from san_search.data import open_dataset

    ds = open_dataset(data)
    test = ds.split("test")
    women, men = np.flatnonzero(test.gender == 0), np.flatnonzero(test.gender == 1)
    pick = [int(i) for pair in zip(women[: count // 2], men[: count - count // 2],
                                   strict=False) for i in pair][:count]
    root = ds.info.get("root")
    sources = test.source_path.to_pylist()
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in pick:
        src = Path(root) / str(sources[i]) if root and sources[i] else None
        if src is not None and src.is_file():
            target = dest / f"{i:05d}-{src.name}"
            shutil.copyfile(src, target)
        else:
            target = dest / f"{i:05d}.png"
            img = np.asarray(test.images[i])
            if img.dtype != np.uint8:
                img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            Image.fromarray(img).save(target)
        out.append(target)
    return out


def resolve_tracking(uri: str | None, folder: Path, log: Log) -> tuple[str, dict[str, Any]]:
    """The tracking URI to use, starting a local server when none is configured."""
    import os

    from san_search import tracking

    given = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        resolved = tracking.resolve_tracking_uri(given)
        tracking.check_reachable(resolved)
        return resolved, {"uri": resolved, "started": False, "configured": True}
    log(f"starting a local MLflow server (SQLite + artifacts in {folder}) ...")
    info = tracking.serve_local(folder)
    verb = "started" if info["started"] else "reusing"
    log(f"{verb} MLflow server {info['uri']} (pid {info['pid']}; log {info['log']})")
    return str(info["uri"]), {**info, "configured": False}


def demo_data(data: str | Path | None, out: Path, log: Log) -> tuple[Path, PreparedDataset]:
    """The given prepared dataset, else the synthetic faces in `<out>/data` (made once)."""
    from san_search.data import BuildOptions, open_dataset, synth

    if data is None:
        data = out / "data"
        if (data / "dataset.json").is_file():
            log(f"reusing the synthetic faces in {data}")
        else:
            synth(data, identities=120, images_per_identity=8, size=32,
                  options=BuildOptions(pairs=300))
            log(f"synthetic faces written to {data} (a stand-in for real faces)")
    data = Path(data).absolute()
    ds = open_dataset(data)
    log(f"dataset {data}: {ds.size} px, fingerprint {ds.fingerprint[:12]}")
    return data, ds


def run_demo(out: str | Path = "runs/demo", *, data: str | Path | None = None,
             trials: int | None = None, tracking_uri: str | None = None,
             gpus_per_trial: float | None = None, size: int = 3,
             log: Log = print) -> dict[str, Any]:
    """Run every step; returns the summary (also written next to the outputs)."""
    from san_search import search
    from san_search.ensemble.export import export_ensemble, register
    from san_search.ensemble.orchestration import select
    from san_search.ensemble.perturb import perturb_files
    from san_search.zoo.store import load_spec, train_zoo

    t0 = time.perf_counter()
    out = Path(out).absolute()
    space = demo_space()
    _check_demo_args(data, trials)
    out.mkdir(parents=True, exist_ok=True)
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    uri, server = resolve_tracking(tracking_uri, out / "mlflow", log)
    log(f"MLflow UI: {uri}")

    _step(log, 1, "data", t0)
    data, ds = demo_data(data, out, log)

    _step(log, 2, "zoo (zoos/demo.yaml: aux, val and test models)", t0)
    zoo_dir = out / "zoo" if data == (out / "data").absolute() else \
        out / f"zoo-{ds.fingerprint[:12]}"
    train_zoo(load_spec(DEMO_ZOO), data, zoo_dir, log=log)

    _step(log, 3, f"search ({space.name})", t0)
    summary = search.start(space, data, zoo_dir, out=out / "search", name=name,
                           tracking_uri=uri, experiment="san-search-demo",
                           overrides=_overrides(trials, gpus_per_trial, log), log=log)
    rows = summary["rows"]
    feasible = [r for r in rows if r.get("feasible")]
    if not feasible:
        raise DemoError(f"search {name} found no feasible candidate; see {summary['folder']}")

    _step(log, 4, "ensemble selection", t0)
    k = max(1, min(size, len(feasible)))
    sel = select(name, search_dir=out / "search", size=k, min_utility=0.0, log=log)

    _step(log, 5, "export and registration", t0)
    export_dir = export_ensemble(sel, out / "ensembles" / name, log=log)
    reg = register(export_dir, sel.tracking_uri, sel.ensemble_run_id, "san-search-demo",
                   "champion", log=log)

    _step(log, 6, "perturb sample faces", t0)
    samples = out / "samples" / name
    originals = write_samples(data, samples / "originals")
    rep = perturb_files(export_dir, samples / "originals", samples / "perturbed", progress=log,
                       crops_only=True)
    result = {"name": name, "tracking_uri": uri, "server": server, "data": str(data),
              "zoo": str(zoo_dir), "search": summary, "selection": sel,
              "export": str(export_dir), "registered": reg, "samples": str(samples),
              "perturbed": len(rep.written), "originals": len(originals),
              "seconds": time.perf_counter() - t0, "images_per_s": _throughput(rows)}
    text = format_summary(result)
    (out / f"{name}-summary.txt").write_text(text + "\n")
    log("\n" + text)
    return result


def _check_demo_args(data: str | Path | None, trials: int | None) -> None:
    """Refuse a --data that is not a prepared dataset and a --trials below 2, up front."""
    if data is not None and not (Path(data) / "dataset.json").is_file():
        raise DemoError(f"--data {data}: not a prepared dataset (no dataset.json); make one "
                        "with `san-search data prepare`")
    if trials is not None and trials < 2:
        raise DemoError(f"--trials must be at least 2, got {trials}")


def _overrides(trials: int | None, gpus_per_trial: float | None, log: Log
               ) -> dict[str, dict[str, Any]]:
    """The demo space's overrides: the trial budget and GPU trials when a GPU is visible."""
    overrides: dict[str, dict[str, Any]] = {}
    if trials is not None:
        overrides["budget"] = {"trials": trials}
    gpus = _gpus(gpus_per_trial)
    if gpus:
        overrides["resources"] = {"use_gpu": True, "gpus_per_worker": gpus}
        log(f"GPU trials: {gpus} GPU per Train worker")
    return overrides


def _gpus(gpus_per_trial: float | None) -> float:
    """GPU share per Train worker: the given value, else 0.5 when Ray sees a GPU here."""
    if gpus_per_trial is not None:
        if gpus_per_trial < 0:
            raise DemoError(f"--gpus-per-trial must be >= 0, got {gpus_per_trial}")
        return gpus_per_trial
    import torch

    return 0.5 if torch.cuda.is_available() else 0.0


def _throughput(rows: list[dict[str, Any]]) -> float | None:
    rates = [float(r["images_per_s"]) for r in rows if r.get("images_per_s", 0) > 0]
    return float(np.median(rates)) if rates else None


def format_summary(r: dict[str, Any]) -> str:
    from san_search.ensemble.orchestration import format_rows
    from san_search.search import format_table
    from san_search.tracking import ui_url

    sel = r["selection"]
    rows = r["search"]["rows"]
    front = [x for x in rows if x["on_front"]]
    lines = [f"san-search demo {r['name']}: done in {r['seconds'] / 60:.1f} min", "",
             f"search: {len(rows)} trials, {sum(bool(x.get('feasible')) for x in rows)} "
             f"feasible, {len(front)} on the Pareto front, hypervolume "
             f"{r['search']['hypervolume']:.4f}",
             format_table(front), "",
             f"ensemble ({sel.policy} policy): "
             + ", ".join(f"{m['name']} (val privacy {m['val']['privacy_mean']:.3f}, "
                         f"utility {m['val']['utility_mean']:.3f})" for m in sel.members),
             "", "test pool (never used before):",
             format_rows(sel.test_table, ["privacy_mean", "utility_mean", "ssim"], "method"),
             ""]
    if r["images_per_s"]:
        lines.append(f"training throughput (median over trials): {r['images_per_s']:.0f} "
                     "images/s per Train worker")
    lines += [
        "outputs:",
        f"  MLflow UI        {ui_url(r['tracking_uri'], r['search'].get('experiment_id'))}"
        "  (experiment san-search-demo)"
        + ("" if r["server"].get("configured") else
           f"; stop it: kill {r['server']['pid']}"),
        f"  dataset          {r['data']}",
        f"  zoo              {r['zoo']}",
        f"  search           {r['search']['folder']}",
        f"  ensemble         {r['export']}  (model card: README.md)",
        f"  registered model {r['registered']['uri']}",
        f"  samples          {r['samples']}/originals -> perturbed "
        f"({r['perturbed']} of {r['originals']} written)",
    ]
    return "\n".join(lines)
