"""The demo's work on a GPU, runnable without Ray, MLflow or Optuna (for machines that have
only torch, timm, numpy and pyarrow): the demo's synthetic faces, its zoo
(`san_search/zoos/demo.yaml`) trained on CUDA, then trials of the demo's search space
(`search_spaces/demo.yaml`: 2 epochs of 256 images, val scoring after each) on CUDA and on
the CPU in the same run, with training images/s.

    python bench/gpu_demo.py [--out gpu_demo.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from san_search.config import CandidateConfig
from san_search.data import BuildOptions, synth
from san_search.training.trainer import SanTrainer
from san_search.zoo.store import add_model, load_spec, train_model

REPO = Path(__file__).resolve().parents[1]
# Points of the demo space (widths 4-12, loss weights and learning rates inside its ranges).
TRIALS = [dict(width=4, w_rec=3.0, w_gender=1.0, w_matcher=1.0, lr=0.003),
          dict(width=8, w_rec=10.0, w_gender=3.0, w_matcher=1.0, lr=0.005),
          dict(width=12, w_rec=1.5, w_gender=0.5, w_matcher=3.0, lr=0.002)]


def trial(data: Path, zoo: Path, device: str, params: dict[str, Any]) -> dict[str, float]:
    cfg = CandidateConfig(autoencoder="san_conv", depth=1, skip=True, batch_size=32,
                          images_per_epoch=256, epochs=2, matcher_warmup=0,
                          aux_gender=("gender_aux_paper_cnn",),
                          aux_matcher="matcher_aux_resnet10t",
                          **params)
    t0 = time.perf_counter()
    t = SanTrainer(cfg, data, zoo, device=device)
    rates, last = [], {}
    for _ in range(cfg.epochs):
        m = t.train_epoch()
        rates.append(m["images_per_s"])
        last = t.evaluate()
    if device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "images_per_s": max(rates),
            "val_privacy_mean": last.get("val_privacy_mean", float("nan")),
            "val_utility_mean": last.get("val_utility_mean", float("nan"))}


def main() -> None:
    from safetensors.torch import save

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_demo.json")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    res: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        data, zoo = Path(tmp) / "data", Path(tmp) / "zoo"
        synth(data, identities=120, images_per_identity=8, size=32,
              options=BuildOptions(pairs=300))
        t0 = time.perf_counter()
        for spec in load_spec(REPO / "san_search" / "zoos" / "demo.yaml").models:
            model, meta = train_model(dataclasses.replace(spec, gpus=1.0), data,
                                      log=lambda _: None)
            add_model(zoo, save(model.state_dict()), meta, str(data))
            res[f"zoo.{spec.name}"] = {"seconds": meta["seconds"], "device": meta["device"],
                                       **meta["metrics"]}
        res["zoo_seconds"] = time.perf_counter() - t0
        print(f"demo zoo on CUDA: {res['zoo_seconds']:.0f} s", flush=True)
        for device in ("cuda", "cpu"):
            rows = [trial(data, zoo, device, p) for p in TRIALS]
            res[f"trials_{device}"] = rows
            print(f"{device}: " + "; ".join(f"{r['images_per_s']:.0f} images/s, "
                                            f"{r['seconds']:.1f} s" for r in rows), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
