"""GPU checks, runnable without Ray, MLflow or Optuna (the lent GPU machines have only torch,
timm, numpy, pyarrow): train one zoo model on CUDA, then time SAN training steps on CUDA in
float32 and with bfloat16 autocast, against the CPU in the same run.

    python bench/gpu_check.py --data DATASET_DIR [--out results.json]

Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from san_search.config import CandidateConfig, ModelSpec
from san_search.data import BuildOptions, synth
from san_search.training.trainer import SanTrainer
from san_search.zoo.store import add_model, train_model


def _zoo(data: Path, out: Path, device_gpus: float, epochs: int) -> dict[str, dict]:
    from safetensors.torch import save

    metas = {}
    for name, kind, arch, role in [
        ("gender_aux_paper_cnn", "gender", "paper_cnn", "aux"),
        ("gender_val_regnetx", "gender", "regnetx_002", "val"),
        ("matcher_aux_resnet10t", "matcher", "resnet10t", "aux"),
        ("matcher_val_regnetx", "matcher", "regnetx_002", "val"),
    ]:
        spec = ModelSpec(name=name, kind=kind, arch=arch, role=role, epochs=epochs,
                         batch_size=128, lr=0.003, gpus=device_gpus)
        model, meta = train_model(spec, data, log=print)
        add_model(out, save(model.state_dict()), meta, str(data))
        metas[name] = {k: meta[k] for k in ("seconds", "device", "metrics")}
    return metas


def _san_speed(data: Path, zoo: Path, device: str, amp: bool, batch: int, steps: int,
               width: int = 32) -> float:
    import numpy as np

    cfg = CandidateConfig(aux_gender=("gender_aux_paper_cnn",),
                          aux_matcher="matcher_aux_resnet10t", depth=3, width=width,
                          batch_size=batch, amp=amp)
    t = SanTrainer(cfg, data, zoo, device=device)
    rng = np.random.default_rng(0)
    for i in range(steps + 3):
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        t.step(np.sort(rng.choice(len(t.shard), batch, replace=False)), use_matcher=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepared dataset (e.g. LFW at 32 px)")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--zoo-epochs", type=int, default=4)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    res: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # 1. a zoo trained on CUDA (issue: train one model on CUDA and report it)
        zoo = tmp_path / "zoo"
        t0 = time.perf_counter()
        res["zoo_on_cuda"] = _zoo(Path(args.data), zoo, 1.0, args.zoo_epochs)
        res["zoo_seconds"] = time.perf_counter() - t0
        # 2. SAN steps: CUDA fp32 vs bf16 autocast vs CPU, on the real data
        speeds = {}
        for dev, amp, batch, steps in [("cpu", False, 64, 5), ("cuda", False, 256, 30),
                                       ("cuda", True, 256, 30)]:
            key = f"{dev}{'_bf16' if amp else '_fp32'}_b{batch}"
            speeds[key] = _san_speed(Path(args.data), zoo, dev, amp, batch, steps)
            print(f"SAN step {key}: {speeds[key]:.0f} images/s", flush=True)
        res["san_images_per_s_real_data"] = speeds
        # 3. larger images (synthetic at 64 and 128 px): a zoo per size, then SAN steps
        for size in (64, 128):
            d = tmp_path / f"synth{size}"
            synth(d, identities=300, images_per_identity=8, size=size,
                  options=BuildOptions(pairs=500))
            z = tmp_path / f"zoo{size}"
            _zoo(d, z, 1.0, 1)
            for amp in (False, True):
                key = f"synth{size}_cuda_{'bf16' if amp else 'fp32'}_b128"
                res[key] = _san_speed(d, z, "cuda", amp, 128, 20)
                print(f"SAN step {key}: {res[key]:.0f} images/s", flush=True)
    res = json.loads(json.dumps(res, default=str))
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
