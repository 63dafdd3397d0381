"""SAN training: the per-worker loop that Ray Train's TorchTrainer runs, built on a plain
PyTorch `SanTrainer` (so one step also runs without Ray: a GPU check, a notebook).

Each epoch trains on this worker's shard of the train split, then rank 0 scores the SAN's
privacy output on the val pool and every worker reports; a checkpoint (safetensors weights,
optimizer state, epoch) goes with each report, and a restarted run resumes from the latest.
No Tune, Optuna or MLflow here: the caller passes `EpochHooks` (per-epoch logging, the
early-stopping question) and Ray Train callbacks (a search forwards reports to Tune).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from san_search.config import CandidateConfig, TrainResources
from san_search.data import open_dataset
from san_search.data.groups import sampling_for
from san_search.data.store import PreparedDataset
from san_search.errors import CandidateError, NonFiniteLoss
from san_search.images import channels, color_of, mismatch, to_nchw
from san_search.metric_names import val
from san_search.models import create
from san_search.training.device import autocast, choose_device, compiled, memory_format, place
from san_search.training.losses import san_loss
from san_search.zoo.pool import PoolScorer, load_pool, san_transform
from san_search.zoo.store import Zoo, open_zoo

WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "trainer.json"


@dataclass(frozen=True)
class EpochHooks:
    """What the Train loop calls each epoch besides Ray Train's report. Both must be
    picklable (module-level classes or functions): they travel in the loop's config.

    `log(metrics)`: rank 0, every epoch (e.g. `tracking.EpochLogger`).
    `early_stop(epoch, metrics)`: every rank, every epoch; rank 0 passes its metrics, the
    others None. Returns None when it was not asked at this epoch, else True to stop."""

    log: Callable[[Mapping[str, Any]], None] | None = None
    early_stop: Callable[[int, Mapping[str, Any] | None], bool | None] | None = None


def check_candidate(cfg: CandidateConfig, zoo: Zoo, image_size: int, channels: int = 1
                    ) -> None:
    """Fail before training: auxiliaries must exist and have role `aux`; the autoencoder must
    accept the image size."""
    for name, kind in [*((g, "gender") for g in cfg.aux_gender), (cfg.aux_matcher, "matcher")]:
        meta = zoo.entries.get(name)
        if meta is None or meta["kind"] != kind:
            have = ", ".join(zoo.names(kind, "aux")) or "none"
            raise CandidateError(f"no {kind} model {name!r} in zoo {zoo.path} (aux {kind} "
                                 f"models: {have})")
        if meta["role"] != "aux":
            raise CandidateError(
                f"{name!r} has role {meta['role']!r}: SANs may only train against 'aux' models "
                f"(aux {kind} models: {', '.join(zoo.names(kind, 'aux'))})")
    try:
        create("autoencoder", cfg.autoencoder, image_size=image_size, channels=channels,
               **cfg.autoencoder_kwargs())
    except ValueError as exc:
        raise CandidateError(str(exc)) from None


def balanced(gender: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
    """Row probabilities under which the two genders are drawn equally often: each row
    weighs 1 / (its gender's count), times `p` (the group weights' probabilities) when given,
    normalised. A shard with one gender keeps its rows' shares."""
    g = np.asarray(gender).astype(bool)
    n_male, n_female = int(g.sum()), int((~g).sum())
    w = np.where(g, 1.0 / max(n_male, 1), 1.0 / max(n_female, 1))
    if p is not None:
        w = w * np.asarray(p, dtype=np.float64)
    return w / w.sum()


def _frozen(model: nn.Module, device: torch.device, cfg: CandidateConfig) -> nn.Module:
    model = place(model, device, cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        rest["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                rest["state"][str(pid)][k] = v
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(p): dict(v) for p, v in rest["state"].items()}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": rest["param_groups"]}


class SanTrainer:
    """Trains one SAN candidate on one worker's shard; evaluates on the val pool."""

    def __init__(self, cfg: CandidateConfig, data: str | Path | PreparedDataset,
                 zoo: str | Path | Zoo, *, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1, wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
                 scorer: PoolScorer | None = None) -> None:
        """`data` and `zoo` may be already opened (a process that trains several trials
        keeps them, and the val `scorer`, open)."""
        self.cfg, self.device = cfg, torch.device(device)
        self.ds = data if isinstance(data, PreparedDataset) else open_dataset(data)
        if not isinstance(zoo, Zoo):
            zoo = open_zoo(zoo, expect=self.ds)
        elif zoo.color != self.ds.color:
            raise CandidateError(mismatch("zoo", zoo.path, zoo.color, self.ds.path,
                                          self.ds.color))
        self.zoo = zoo
        check_candidate(cfg, self.zoo, self.ds.size, self.ds.channels)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed + 7919 * rank)
        self.shard = self.ds.split("train").shard(rank, world_size)
        # group oversampling (`group_weights`): each row's probability; None = shuffled epochs
        self.sample_p = sampling_for(cfg.group_weights, self.ds, self.shard.group)
        if cfg.balance_gender:
            self.sample_p = balanced(self.shard.gender, self.sample_p)
        self.model = place(create("autoencoder", cfg.autoencoder, image_size=self.ds.size,
                                  channels=self.ds.channels, **cfg.autoencoder_kwargs()),
                           self.device, cfg)
        # DDP under Ray Train with several workers; compiled when asked (same parameters)
        self.net = compiled(wrap(self.model), cfg)
        self.genders = [_frozen(self.zoo.load(n), self.device, cfg) for n in cfg.aux_gender]
        self.matcher = _frozen(self.zoo.load(cfg.aux_matcher), self.device, cfg)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        p = self.ds.prototypes
        self.proto = {g: to_nchw(p[n][None]).to(self.device)  # (1, C, S, S)
                      for g, n in ((0, "female"), (1, "male"))}
        self.epoch = 0
        self._scorer = scorer

    # -------------------------------------------------------------- training
    def step(self, idx: np.ndarray, use_matcher: bool) -> dict[str, float]:
        x = to_nchw(self.shard.images[idx]).to(self.device,
                                               memory_format=memory_format(self.cfg))
        y = torch.from_numpy(self.shard.gender[idx].astype(np.int64)).to(self.device)
        male = (y == 1).view(-1, 1, 1, 1)
        same = torch.where(male, self.proto[1], self.proto[0])
        opp = torch.where(male, self.proto[0], self.proto[1])
        with autocast(self.cfg, self.device):
            out_same, out_opp = self.net(x, same, opp)
            loss, terms = san_loss(
                x, y, out_same.float(), out_opp.float(), self.genders,
                self.matcher if use_matcher else None, w_rec=self.cfg.w_rec,
                w_gender=self.cfg.w_gender, w_matcher=self.cfg.w_matcher,
                distance=self.cfg.matcher_distance,
                matcher_fraction=self.cfg.matcher_fraction,
                gender_target=self.cfg.gender_target, same_gender=self.cfg.same_gender,
                matcher_target=self.cfg.matcher_target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {self.epoch + 1}: "
                                     "lower lr or the loss weights")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return terms

    def train_epoch(self) -> dict[str, float]:
        """One epoch over this worker's shard (or a seeded sample); mean loss terms. With
        `group_weights` or `balance_gender`, the epoch's images are drawn with replacement,
        each row with its share (`sample_p`), so a small group or gender is seen more
        often."""
        self.net.train()
        n = len(self.shard)
        per_epoch = min(self.cfg.images_per_epoch or n, n)
        if self.sample_p is None:
            order = self.rng.permutation(n)[:per_epoch]
        else:
            order = self.rng.choice(n, size=per_epoch, replace=True, p=self.sample_p)
        use_matcher = self.epoch >= self.cfg.matcher_warmup
        sums: dict[str, float] = {}
        steps = 0
        t0 = time.perf_counter()
        for i in range(0, per_epoch - 1, self.cfg.batch_size):
            idx = np.sort(order[i : i + self.cfg.batch_size])
            if len(idx) < 2:
                break
            for k, v in self.step(idx, use_matcher).items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        self.epoch += 1
        dt = time.perf_counter() - t0
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out["images_per_s"] = steps * self.cfg.batch_size / dt if dt > 0 else 0.0
        return out

    # -------------------------------------------------------------- evaluation
    def scorer(self) -> PoolScorer:
        if self._scorer is None:
            self._scorer = PoolScorer(load_pool(self.zoo, "val", str(self.device)),
                                      self.ds.split("val"))
        return self._scorer

    def perturb_val(self) -> np.ndarray:
        val = self.ds.split("val")
        return san_transform(self.model, self.ds.prototypes, val.gender, str(self.device))(
            val.images)

    def evaluate(self) -> dict[str, float]:
        """Val-pool scores of the SAN's privacy output (alpha = 1)."""
        m = self.scorer().score(self.perturb_val())
        return {val(k): v for k, v in m.items()}

    # -------------------------------------------------------------- checkpoints
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  str(folder / WEIGHTS))
        tensors, rest = _flatten_optimizer(self.opt.state_dict())
        save_file(tensors, str(folder / OPTIMIZER))
        (folder / STATE).write_text(json.dumps({
            "epoch": self.epoch, "optimizer": rest, "config": self.cfg.to_dict(),
            "data_fingerprint": self.ds.fingerprint, "color": self.ds.color,
            "rng": self.rng.bit_generator.state,
        }))

    def load(self, folder: str | Path) -> None:
        folder = Path(folder)
        check_san_color(folder, self.ds)
        state = json.loads((folder / STATE).read_text())
        self.model.load_state_dict(load_file(str(folder / WEIGHTS), device=str(self.device)))
        opt = _unflatten_optimizer(load_file(str(folder / OPTIMIZER), device=str(self.device)),
                                   state["optimizer"])
        self.opt.load_state_dict(opt)
        self.epoch = int(state["epoch"])
        self.rng.bit_generator.state = state["rng"]


def san_color(folder: str | Path) -> str:
    """The colour mode a SAN checkpoint was trained for (none recorded: gray)."""
    return color_of(json.loads((Path(folder) / STATE).read_text()))


def check_san_color(folder: str | Path, ds: PreparedDataset) -> None:
    """Refuse a SAN checkpoint trained for the other colour mode than the dataset `ds`
    (CandidateError naming both modes and both paths)."""
    color = san_color(folder)
    if color != ds.color:
        raise CandidateError(mismatch("candidate", Path(folder).absolute(), color, ds.path,
                                      ds.color))


def load_san(folder: str | Path, device: str = "cpu") -> tuple[nn.Module, CandidateConfig]:
    """Rebuild a trained SAN from a checkpoint folder (no optimizer), with the channels of
    the colour mode it was trained for (`san_color`)."""
    folder = Path(folder)
    state = json.loads((folder / STATE).read_text())
    cfg = CandidateConfig.from_dict(state["config"], str(folder / STATE))
    model = create("autoencoder", cfg.autoencoder, channels=channels(color_of(state)),
                   **cfg.autoencoder_kwargs())
    model.load_state_dict(load_file(str(folder / WEIGHTS), device=device))
    return model.eval(), cfg



def _noop(metrics: Mapping[str, Any]) -> None:
    return None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop: config = {"candidate": `CandidateConfig.to_dict()`, "data": path,
    "zoo": path, "threads": torch threads per worker} and optionally "resume_from" (a
    checkpoint folder) and "hooks" (`EpochHooks`)."""
    import ray.train
    import ray.train.torch

    cfg = CandidateConfig.from_dict(config["candidate"], "train loop config")
    hooks: EpochHooks = config.get("hooks") or EpochHooks()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = choose_device()  # not Ray's get_device: cuda only where torch sees a GPU

    def wrap(model: nn.Module) -> nn.Module:
        if world == 1:
            return model
        return ray.train.torch.prepare_model(model, move_to_device=device)  # DDP

    trainer = SanTrainer(cfg, config["data"], config["zoo"], device=device, rank=rank,
                         world_size=world, wrap=wrap)
    ckpt = ray.train.get_checkpoint()  # set when Ray restarts or resumes this run
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            trainer.load(folder)
    elif config.get("resume_from"):
        trainer.load(config["resume_from"])

    def report(metrics: dict[str, Any]) -> None:
        """Report to Ray Train with a checkpoint of the current state (rank 0 writes it)."""
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                trainer.save(tmp)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    run_epochs(trainer, hooks, report, rank=rank, restarted=ckpt is not None)


def run_epochs(trainer: SanTrainer, hooks: EpochHooks,
               report: Callable[[dict[str, Any]], None], *, rank: int = 0,
               restarted: bool = False) -> None:
    """Train `trainer` from its current epoch to the last (or an early stop), calling
    `report(metrics)` after each epoch; a non-finite loss is reported, not raised. Shared by
    the Ray Train loop and a search trial that trains in its own process. `restarted`: the
    run came back from a checkpoint (the fault-injection hook fires only on a first run)."""
    cfg = trainer.cfg
    log_epoch = hooks.log if rank == 0 and hooks.log is not None else _noop
    fail_after = os.environ.get("SAN_SEARCH_FAIL_AFTER_EPOCH")
    while trainer.epoch < cfg.epochs:
        if fail_after == str(trainer.epoch) and not restarted and rank == 0:
            # Fault-injection hook for tests: the worker process dies during the epoch after
            # a checkpoint (the pause lets the controller register that checkpoint first).
            time.sleep(5)
            os._exit(1)
        try:
            metrics = _run_epoch(trainer, rank)
        except FloatingPointError as exc:
            # Report instead of raising: Ray Train would retry a deterministic failure.
            report({"epoch": trainer.epoch, "non_finite_loss": str(exc)})
            return
        log_epoch(metrics)
        stop = None
        if hooks.early_stop is not None:
            stop = hooks.early_stop(trainer.epoch, metrics if rank == 0 else None)
            if stop is not None:
                metrics["early_stopped"] = float(stop)
        report(metrics)
        if stop:
            break


def _run_epoch(trainer: SanTrainer, rank: int) -> dict[str, Any]:
    """Train one epoch; rank 0 also scores it on the val pool. Timings in seconds."""
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {"epoch": trainer.epoch + 1}
    metrics.update(trainer.train_epoch())
    metrics["train_seconds"] = time.perf_counter() - t0
    if rank == 0:
        t1 = time.perf_counter()
        metrics.update(trainer.evaluate())
        metrics["eval_seconds"] = time.perf_counter() - t1
    metrics["epoch_seconds"] = time.perf_counter() - t0
    return metrics


def fit(cfg: CandidateConfig, data: str | Path, zoo: str | Path, *, storage_path: str | Path,
        name: str, resources: TrainResources | None = None,
        resume_from: str | Path | None = None, hooks: EpochHooks | None = None,
        callbacks: Sequence[Any] = ()) -> Any:
    """Run the loop on a `TorchTrainer` with `resources.num_workers` workers; returns Ray's
    Result.

    `resume_from` continues from a checkpoint folder; `resources.max_failures` restarts dead
    workers from their latest checkpoint; a run of the same `name` and `storage_path` picks
    up where it stopped; `storage_path` may be a URI (s3://...). `hooks` run each epoch in
    the workers; `callbacks` are Ray Train callbacks (a search passes Tune's report
    callback). Raises `NonFiniteLoss` when the loss became NaN or infinite."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = resources or TrainResources()
    trainer = TorchTrainer(
        train_loop_per_worker,
        # One worker needs no collectives: gloo, since NCCL (Ray's choice with use_gpu) fails
        # where torch sees no GPU. Several workers on GPUs keep NCCL for DDP.
        torch_config=TorchConfig(backend="gloo") if resources.num_workers == 1 else None,
        train_loop_config={"candidate": cfg.to_dict(),
                           "data": str(Path(data).absolute()),
                           "zoo": str(Path(zoo).absolute()),
                           "threads": max(1, int(resources.cpus_per_worker)),
                           # Ray Train V2 drops `resume_from_checkpoint`: the loop loads it.
                           "resume_from": str(Path(resume_from).absolute()) if resume_from
                           else None,
                           "hooks": hooks or EpochHooks()},
        scaling_config=ray.train.ScalingConfig(num_workers=resources.num_workers,
                                               use_gpu=resources.use_gpu,
                                               resources_per_worker=resources.per_worker()),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage_path) if "://" in str(storage_path)
            else str(Path(storage_path).absolute()),
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )
    result = trainer.fit()
    if result.metrics and result.metrics.get("non_finite_loss"):
        raise NonFiniteLoss(str(result.metrics["non_finite_loss"]))
    return result
