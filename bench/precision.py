"""Benchmark: whether the candidate's speed options pay. Times SAN training steps (the SAN,
two aux gender classifiers and an aux matcher, random weights: speed does not depend on
them) in fp32 and bf16 autocast (`amp`), each in the default and the `channels_last` memory
format, at several image sizes, on the CPU or a GPU. Uses `san_search.training.device`, as a trial
does.

    python bench/precision.py [--device cpu|cuda] [--sizes 32 64 112] [--batch 64] [--steps 5]

Prints images/s per setting and the speed-up over fp32 / default layout at the same size.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from san_search.config import CandidateConfig
from san_search.models import create
from san_search.training.device import autocast, memory_format, place
from san_search.training.losses import san_loss


def images_per_s(cfg: CandidateConfig, size: int, device: torch.device, steps: int) -> float:
    """Training images/s of `cfg` at `size` px on `device` (after one warm-up step)."""
    torch.manual_seed(0)
    san = place(create("autoencoder", "san_conv", image_size=size, **cfg.autoencoder_kwargs()),
                device, cfg)
    genders = [place(create("gender", a, image_size=size), device, cfg).eval()
               for a in ("paper_cnn", "resnet10t")]
    matcher = place(create("matcher", "resnet10t", image_size=size), device, cfg).eval()
    for m in (*genders, matcher):
        m.requires_grad_(False)
    opt = torch.optim.Adam(san.parameters(), lr=1e-3)
    fmt = memory_format(cfg)
    x = torch.rand(cfg.batch_size, 1, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 2, (cfg.batch_size,), device=device)
    proto = torch.rand(1, 1, size, size, device=device).expand(cfg.batch_size, -1, -1, -1)

    def step() -> None:
        with autocast(cfg, device):
            same, opp = san(x, proto, proto)
            loss, _ = san_loss(x, y, same.float(), opp.float(), genders, matcher, w_rec=1.0,
                               w_gender=1.0, w_matcher=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}"
          f", {torch.get_num_threads()} threads), batch {args.batch}, {args.steps} steps, "
          "SAN san_conv depth 2 width 16 + paper_cnn + resnet10t + resnet10t matcher")
    print(f"{'px':>4} {'precision':>9} {'layout':>14} {'images/s':>9} {'speed-up':>8}")
    for size in args.sizes:
        base = 0.0
        for amp in (False, True):
            for cl in (False, True):
                cfg: Any = CandidateConfig(batch_size=args.batch, amp=amp, channels_last=cl)
                ips = images_per_s(cfg, size, device, args.steps)
                base = base or ips
                print(f"{size:>4} {'bf16' if amp else 'fp32':>9} "
                      f"{'channels_last' if cl else 'contiguous':>14} {ips:>9.0f} "
                      f"{ips / base:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
