"""The model zoo: training the gender classifiers and face matchers that SANs train against
(role `aux`) and that judge them (`val`, `test`), storing them with their roles, and loading
them back with the checks that keep roles and data honest.

A zoo folder holds `zoo.json` (data fingerprint, colour mode, model index) and, per model,
`models/<name>.safetensors` + `models/<name>.json` (kind, architecture, role, data fingerprint,
colour mode, training settings, metrics, SHA-256 of the weights). The colour mode (`color`:
gray or rgb, the dataset's; none recorded: gray) sets the models' input channels, and a zoo
refuses a dataset of the other mode (`open_zoo(expect=dataset)`). Models are trained as
parallel Ray tasks; the training loop itself is plain PyTorch (`train_model`) so it also
runs without Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from san_search import __version__
from san_search.atomic import write_atomic
from san_search.config import ROLES, ModelSpec, ZooSpec, load_zoo_spec
from san_search.console import Log
from san_search.data import open_dataset
from san_search.data.store import PreparedDataset, SplitView
from san_search.errors import ConfigError, UnknownModelError, ZooError
from san_search.images import channels, color_of, mismatch, to_nchw
from san_search.metrics import gender_scores, pair_verification
from san_search.models import builder, create, pretrained
from san_search.models.matchers import CosFace
from san_search.raylocal import start_ray
from san_search.zoo import pretrained as zoo_pretrained
from san_search.zoo.evaluators import TorchGender, TorchMatcher

# ------------------------------------------------------------------ the spec


def load_spec(path: str | Path) -> ZooSpec:
    """Read a zoo YAML (config.load_zoo_spec) and check that every model's architecture is
    registered for its kind: `<file>: models[i] (<name>): key 'arch': unknown ... model
    '<arch>'; did you mean ...`."""
    spec = load_zoo_spec(path, check_arch=builder, arch_of_source=zoo_pretrained.arch_of_source)
    try:
        zoo_pretrained.check_entries(spec)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return spec


def check_archs(spec: ZooSpec) -> None:
    """The same check for a spec built in code: every architecture registered, before any
    model trains (ConfigError naming models[i] and the closest registered names)."""
    for i, m in enumerate(spec.models):
        try:
            builder(m.kind, m.arch)
        except UnknownModelError as exc:
            raise ConfigError(f"models[{i}] ({m.name}): key 'arch': {exc}") from None
    zoo_pretrained.check_entries(spec)


# ------------------------------------------------------------------ training


def _device(spec: ModelSpec) -> torch.device:
    if spec.gpus and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips per image and a random shift of up to size/16 px per batch."""
    flip = torch.rand(x.shape[0], generator=gen, device="cpu") < 0.5
    x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    pad = max(1, x.shape[-1] // 16)
    dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return x[..., pad + dy : pad + dy + x.shape[-2] - 2 * pad,
             pad + dx : pad + dx + x.shape[-1] - 2 * pad]


def _load_local_weights(model: nn.Module, path: str, log: Log) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ZooError(f"pretrained weights not found: {p}")
    if p.suffix == ".safetensors":
        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ZooError(f"{p}: no tensor matches the model's names and shapes")
    model.load_state_dict(usable, strict=False)
    log(f"loaded {len(usable)}/{len(own)} tensors from {p}")


def build(kind: str, arch: str, image_size: int, training: dict[str, Any],
          color: str = "gray") -> nn.Module:
    """A zoo model's network with random weights, from its kind, architecture, settings and
    colour mode (its input channels; a pretrained network takes either)."""
    if training.get("source"):  # a converted pretrained network, at its input size
        return pretrained.build(pretrained.source(training["source"]), training["input_size"])
    return create(kind, arch, image_size=image_size, channels=channels(color),
                  **({"embed_dim": training["embed_dim"]} if kind == "matcher" else {}))


def evaluate_gender(model: nn.Module, view: SplitView, device: str = "cpu") -> dict[str, float]:
    score = TorchGender("m", "-", model, device).male_score(view.images)
    return gender_scores(score, view.gender)


def evaluate_matcher(model: nn.Module, view: SplitView, device: str = "cpu") -> dict[str, float]:
    if view.pairs is None:
        raise ZooError(f"split {view.name!r} has no verification pairs")
    emb = TorchMatcher("m", "-", model, device).embed(view.images)
    return pair_verification(emb, emb, view.pairs.a, view.pairs.b, view.pairs.same)


def train_model(spec: ModelSpec, data: str | Path, log: Log = print, *,
                train: SplitView | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train one zoo model on the dataset at `data`; returns the model (CPU, eval mode) and its
    metadata. Plain PyTorch: runs inside a Ray task, or alone (a GPU check, a notebook).
    `train` replaces the dataset's train split as what the model learns from (the adaptive
    attacker's perturbed faces, `san_search.ensemble.attack`); val still reports each epoch."""
    t0 = time.perf_counter()
    ds = open_dataset(data)
    device = _device(spec)
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    size = ds.size
    if spec.source:
        val_view = ds.split("val")
        model, rows = zoo_pretrained.convert_model(
            spec, lambda m: (evaluate_gender if spec.kind == "gender"
                             else evaluate_matcher)(m, val_view, str(device)), log)
        return model, _metadata(spec, ds, rows, device, t0)
    model = build(spec.kind, spec.arch, size, spec.training_settings(), ds.color)
    if spec.weights:
        _load_local_weights(model, spec.weights, log)
    model.to(device)
    train, val = ds.split("train") if train is None else train, ds.split("val")
    if spec.kind == "gender":
        labels = train.gender.astype(np.int64)
        head: nn.Module | None = None
        params = list(model.parameters())
    else:
        labels = train.identity_index.astype(np.int64)
        head = CosFace(spec.embed_dim, int(labels.max()) + 1).to(device)
        params = list(model.parameters()) + list(head.parameters())
    per_epoch = spec.images_per_epoch or len(train)
    steps_per_epoch = max(1, per_epoch // spec.batch_size)
    opt, sched = _optimiser(params, spec, steps_per_epoch * spec.epochs)
    history: list[dict[str, float]] = []
    for epoch in range(1, spec.epochs + 1):
        model.train()
        if head is not None:
            head.train()
        order = rng.permutation(len(train))
        if per_epoch < len(train):
            order = order[:per_epoch]
        losses = _epoch_steps(model, head, train.images, labels, order, spec.batch_size,
                              steps_per_epoch, (opt, sched), device, gen)
        dev = str(device)
        scores = (evaluate_gender(model, val, dev) if spec.kind == "gender"
                  else evaluate_matcher(model, val, dev))
        row = {"epoch": epoch, "loss": float(np.mean(losses)),
               **{f"val_{k}": v for k, v in scores.items()}}
        history.append(row)
        shown = ("val_accuracy", "val_auc") if spec.kind == "gender" else ("val_tar", "val_auc")
        log(f"[{spec.name}] epoch {epoch}/{spec.epochs} loss {row['loss']:.3f} "
            + " ".join(f"{k} {row[k]:.3f}" for k in shown)
            + f" ({time.perf_counter() - t0:.0f} s)")
    model.eval().cpu()
    return model, _metadata(spec, ds, history, device, t0)


def _epoch_steps(model: nn.Module, head: nn.Module | None, images: np.ndarray,
                 labels: np.ndarray, order: np.ndarray, batch: int, steps: int,
                 optim: tuple[Any, Any], device: torch.device, gen: torch.Generator
                 ) -> list[float]:
    """One epoch's optimiser steps over `order` in batches (augmented; the CosFace `head`
    for a matcher, cross-entropy for a gender classifier); the loss of each step."""
    opt, sched = optim
    losses = []
    for step in range(steps):
        idx = np.sort(order[step * batch : (step + 1) * batch])
        if len(idx) < 2:
            continue
        x = _augment(to_nchw(images[idx]).to(device), gen)
        y = torch.from_numpy(labels[idx]).to(device)
        out = model(x)
        loss = F.cross_entropy(out, y) if head is None else head(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _optimiser(params: list[nn.Parameter], spec: ModelSpec, total: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a linear warm-up over the first 5% of the `total` steps, then cosine decay."""
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total)
                                                                      / total)))
    return opt, sched


def _metadata(spec: ModelSpec, ds: PreparedDataset, history: list[dict[str, float]],
              device: torch.device, t0: float) -> dict[str, Any]:
    """A trained model's metadata (stored as `models/<name>.json`)."""
    return {
        "name": spec.name,
        "kind": spec.kind,
        "arch": spec.arch,
        "role": spec.role,
        "data_fingerprint": ds.fingerprint,
        "image_size": ds.size,
        "color": ds.color,
        "training": spec.training_settings(),
        "metrics": {k: v for k, v in history[-1].items() if k.startswith("val_")},
        "history": history,
        **({"licence": pretrained.source(spec.source).licence()} if spec.source else {}),
        "seconds": round(time.perf_counter() - t0, 1),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "versions": {"san_search": __version__, "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _train_task(spec_dict: dict[str, Any], data: str) -> tuple[bytes, dict[str, Any]]:
    """Ray task body: train, then return the weights as safetensors bytes (the driver writes
    them, so workers need no shared filesystem)."""
    spec = ModelSpec(**spec_dict)
    torch.set_num_threads(max(1, int(spec.cpus)))
    model, meta = train_model(spec, data, log=lambda m: print(m, flush=True))
    return st_save({k: v.contiguous() for k, v in model.state_dict().items()}), meta


# ------------------------------------------------------------------ storage


@dataclass
class Zoo:
    """An opened zoo folder: the index and each model's metadata."""

    path: Path
    data_fingerprint: str
    data_path: str
    entries: dict[str, dict[str, Any]]
    color: str = "gray"  # the colour mode its models take (zoo.json's `color`)

    def names(self, kind: str | None = None, role: str | None = None) -> list[str]:
        return sorted(
            n for n, m in self.entries.items()
            if kind in (None, m["kind"]) and role in (None, m["role"])
        )

    def load(self, name: str) -> nn.Module:
        """Build the model and load its weights, after checking hash and data fingerprint."""
        if name not in self.entries:
            raise ZooError(f"{self.path}: no model named {name!r} (has: {', '.join(self.names())})")
        meta = self.entries[name]
        if meta["data_fingerprint"] != self.data_fingerprint:
            raise ZooError(
                f"{self.path}: model {name!r} was trained on data {meta['data_fingerprint'][:12]}, "
                f"but this zoo is for data {self.data_fingerprint[:12]}; refusing to mix datasets"
            )
        wpath = self.path / "models" / f"{name}.safetensors"
        raw = wpath.read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
            raise ZooError(f"{wpath}: weights changed since training (SHA-256 mismatch)")
        model = build(meta["kind"], meta["arch"], meta["image_size"], meta["training"],
                      color_of(meta))
        model.load_state_dict(st_load(raw))
        return model.eval()

    @property
    def fingerprint(self) -> str:
        """The zoo's own fingerprint: SHA-256 over each model's name, kind, role and weights'
        SHA-256 (not the data's fingerprint, which `data_fingerprint` holds)."""
        rows = sorted((n, m.get("kind", ""), m.get("role", ""), m.get("weights_sha256", ""))
                      for n, m in self.entries.items())
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]

    def licences(self) -> dict[str, dict[str, str]]:
        """The licence record of every pretrained model in the zoo (the aux models the
        members trained against, and the val/test judges) and of the third-party test
        evaluators."""
        from san_search.zoo.evaluators import THIRD_PARTY_LICENCES

        found = {n: {"role": m["role"], **m["licence"]} for n, m in self.entries.items()
                 if m.get("licence")}
        return found | {n: {"role": "test", **lic} for n, lic in THIRD_PARTY_LICENCES.items()}

    def gender_evaluator(self, name: str, device: str = "cpu") -> TorchGender:
        return TorchGender(name, self.entries[name]["role"], self.load(name), device)

    def matcher_evaluator(self, name: str, device: str = "cpu") -> TorchMatcher:
        return TorchMatcher(name, self.entries[name]["role"], self.load(name), device)


def open_zoo(path: str | Path, expect_fingerprint: str | None = None,
             expect: PreparedDataset | None = None) -> Zoo:
    """Open a zoo; with `expect_fingerprint`, refuse a zoo trained on other data; with
    `expect` (a dataset), refuse one made for its other colour mode (naming both modes and
    paths), then one trained on other data."""
    path = Path(path).absolute()
    index = path / "zoo.json"
    if not index.is_file():
        raise ZooError(f"not a zoo: {index} is missing (create one with `san-search zoo train`)")
    info = json.loads(index.read_text())
    if expect is not None:
        if color_of(info) != expect.color:
            raise ZooError(mismatch("zoo", path, color_of(info), expect.path, expect.color))
        expect_fingerprint = expect.fingerprint
    fp = info["data_fingerprint"]
    if expect_fingerprint is not None and fp != expect_fingerprint:
        raise ZooError(
            f"{path}: zoo was trained on data {fp[:12]}, not on this dataset "
            f"({expect_fingerprint[:12]}); train a zoo for this dataset"
        )
    entries = {}
    for name in info["models"]:
        meta_path = path / "models" / f"{name}.json"
        if not meta_path.is_file():
            raise ZooError(f"{path}: model {name!r} is indexed but {meta_path} is missing")
        entries[name] = json.loads(meta_path.read_text())
        if entries[name]["role"] != info["models"][name]["role"]:
            raise ZooError(f"{meta_path}: role differs from zoo.json; a model never changes role")
    return Zoo(path, fp, info.get("data_path", ""), entries, color_of(info))


def _plan(spec: ZooSpec, out: Path, ds: PreparedDataset) -> tuple[list[ModelSpec], list[str]]:
    """Which models to train, and which are already in the zoo (same name, settings, data)."""
    index = out / "zoo.json"
    if not index.is_file():
        if out.is_dir() and any(out.iterdir()):  # never write among a user's files
            raise ZooError(f"{out} is not empty and is not a zoo (no zoo.json); give --out a "
                           "new or empty folder, or an existing zoo")
        return list(spec.models), []
    zoo = open_zoo(out)
    if zoo.color != ds.color:
        raise ZooError(mismatch("zoo", out, zoo.color, ds.path, ds.color))
    if zoo.data_fingerprint != ds.fingerprint:
        raise ZooError(
            f"{out}: this zoo holds models trained on data {zoo.data_fingerprint[:12]}; "
            f"the given dataset is {ds.fingerprint[:12]}. Use a new --out for new data"
        )
    todo, done = [], []
    for m in spec.models:
        old = zoo.entries.get(m.name)
        if old is None:
            todo.append(m)
            continue
        if old["role"] != m.role:
            raise ZooError(
                f"model {m.name!r} already has role {old['role']!r} in {out}; a model never "
                f"changes role (give the {m.role!r} model another name)"
            )
        if (old["kind"], old["arch"], old["training"]) != (m.kind, m.arch, m.training_settings()):
            raise ZooError(
                f"model {m.name!r} in {out} was trained with other settings; give the new "
                "settings a new name (a trained model is never silently replaced)"
            )
        done.append(m.name)
    return todo, done


def add_model(out: Path, weights: bytes, meta: dict[str, Any], data_path: str) -> None:
    """Write one trained model into the zoo folder `out` (created with its index on the first
    model): the weights (safetensors bytes), its metadata from `train_model` with the weights'
    SHA-256 added, and its entry in `zoo.json`. Each file is written atomically."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    name = meta["name"]
    meta = {**meta, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    write_atomic(out / "models" / f"{name}.safetensors", weights)
    write_atomic(out / "models" / f"{name}.json", json.dumps(meta, indent=2).encode())
    index = out / "zoo.json"
    info = (json.loads(index.read_text()) if index.is_file()
            else {"data_fingerprint": meta["data_fingerprint"], "data_path": data_path,
                  "color": color_of(meta), "models": {}})
    info["models"][name] = {"kind": meta["kind"], "arch": meta["arch"], "role": meta["role"]}
    write_atomic(index, json.dumps(info, indent=2, sort_keys=True).encode())


def train_zoo(spec: ZooSpec, data: str | Path, out: str | Path, *,
              ray_address: str | None = None, commercial: bool = False,
              log: Log = print) -> Zoo:
    """Train every model of `spec` not yet in the zoo at `out`, in parallel Ray tasks.

    Each finished model is written at once (atomically), so an interrupted run keeps what it
    finished and a rerun trains only the rest. Fails before training on a dataset or role
    mismatch, or on an architecture that is not registered. Pretrained entries are converted,
    not trained (`zoo_pretrained.usable`: missing packages, hashes, `commercial`). GPUs: a
    model with `gpus: 0` on a cluster with GPUs still trains on the CPU.
    """
    import ray

    check_archs(spec)
    spec = zoo_pretrained.usable(spec, commercial=commercial, log=log)
    data = Path(data).absolute()
    out = Path(out).absolute()
    ds = open_dataset(data)
    todo, done = _plan(spec, out, ds)
    for name in done:
        log(f"[{name}] already trained, kept")
    if not todo:
        return open_zoo(out, expect=ds)
    started = start_ray(ray_address)
    failures: list[str] = []
    try:
        task = ray.remote(_train_task)
        pending = {}
        for m in todo:
            ref = task.options(num_cpus=m.cpus, num_gpus=m.gpus,
                               name=f"zoo:{m.name}").remote(dataclasses.asdict(m), str(data))
            pending[ref] = m
        log(f"training {len(todo)} models as Ray tasks: "
            + ", ".join(f"{m.name} ({m.kind}/{m.arch}, {m.role})" for m in todo))
        t0 = time.perf_counter()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            m = pending.pop(ready[0])
            try:
                weights, meta = ray.get(ready[0])
            except Exception as exc:  # one model failing must not lose the others
                failures.append(f"{m.name}: {exc}")
                log(f"[{m.name}] FAILED: {exc}")
                continue
            add_model(out, weights, meta, str(data))
            shown = ", ".join(f"{k} {v:.3f}" for k, v in meta["metrics"].items())
            log(f"[{m.name}] done in {meta['seconds']:.0f} s: {shown} "
                f"({len(todo) - len(pending)}/{len(todo)}, {time.perf_counter() - t0:.0f} s)")
    finally:
        if started:
            ray.shutdown()
    if failures:
        raise ZooError(f"{len(failures)} model(s) failed: " + "; ".join(failures))
    return open_zoo(out, expect=ds)


def roles_summary(zoo: Zoo) -> dict[str, dict[str, list[str]]]:
    return {kind: {role: zoo.names(kind, role) for role in ROLES}
            for kind in ("gender", "matcher")}
