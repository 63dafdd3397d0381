"""The exported ensemble (`san-search ensemble export`): a folder anyone can load and check.

Layout of an export folder:
  manifest.json                 members (MLflow run ids, configs, val metrics), policy, seed,
                                predictor, preprocessing, val and test tables, data and zoo
                                fingerprints, package versions, ONNX check, SHA-256 of every file
  members/member_<i>.safetensors   each SAN's weights
  members/member_<i>.onnx          the same SAN for ONNX Runtime
  gender_predictor.safetensors / .onnx   the auxiliary classifier that picks prototypes
  prototypes.safetensors        the female and male prototype faces
  trade_off.png, README.md      the model card

Loading (`load_ensemble`) checks every listed file's SHA-256 before reading it and refuses a
changed or missing one. Only JSON, safetensors and ONNX are read: nothing is unpickled.
The folder is built beside its destination and renamed into place once verified, so a failed
export leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from san_search import __version__
from san_search.console import Log
from san_search.ensemble import EnsembleError, Selection, format_rows, trade_off_figure
from san_search.runtime import BACKENDS, EnsembleRuntime

MANIFEST = "manifest.json"
FORMAT = "san-search-ensemble/1"
ONNX_TOLERANCE = 1e-3  # max abs difference allowed between ONNX Runtime and PyTorch
ONNX_OPSET = 17


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class LoadedEnsemble:
    path: Path
    manifest: dict[str, Any]
    runtime: EnsembleRuntime

    @property
    def image_size(self) -> int:
        return int(self.manifest["preprocessing"]["size"])


# ------------------------------------------------------------------ loading

def read_verified(folder: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the bytes of every file it lists, each checked against its SHA-256."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise EnsembleError(f"{folder} is not an exported ensemble ({MANIFEST} missing)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise EnsembleError(f"{mpath}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise EnsembleError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    blobs = {}
    for rel, digest in manifest["files"].items():
        p = folder / rel
        if not p.is_file():
            raise EnsembleError(f"{p}: listed in {MANIFEST} but missing; refusing to load")
        raw = p.read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            raise EnsembleError(f"{p}: SHA-256 does not match {MANIFEST} (the file changed "
                                "after export); refusing to load")
        blobs[rel] = raw
    return manifest, blobs


def load_ensemble(folder: str | Path, backend: str = "torch", policy: str | None = None,
                  threads: int | None = None) -> LoadedEnsemble:
    """Verify and load an export folder with the `torch` or `onnx` backend."""
    from safetensors.numpy import load as np_load

    if backend not in BACKENDS:
        raise EnsembleError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    manifest, blobs = read_verified(folder)
    protos = np_load(blobs["prototypes.safetensors"])
    pred = manifest["predictor"]
    if backend == "onnx":
        from san_search.runtime import onnx_gender, onnx_member

        members = [onnx_member(blobs[m["onnx"]], threads) for m in manifest["members"]]
        predictor = onnx_gender(blobs[pred["onnx"]], threads)
    else:
        import torch
        from safetensors.torch import load as st_load

        from san_search.config import CandidateConfig
        from san_search.models import create
        from san_search.runtime import torch_gender, torch_member

        if threads:
            torch.set_num_threads(threads)
        members = []
        for m in manifest["members"]:
            raw = m["config"]
            cfg = CandidateConfig(**{**raw, "aux_gender": tuple(raw["aux_gender"])})
            model = create("autoencoder", cfg.autoencoder, **cfg.autoencoder_kwargs())
            model.load_state_dict(st_load(blobs[m["weights"]]))
            members.append(torch_member(model.eval()))
        g = create("gender", pred["arch"], image_size=pred["image_size"])
        g.load_state_dict(st_load(blobs[pred["weights"]]))
        predictor = torch_gender(g.eval())
    rt = EnsembleRuntime(members, predictor, {k: protos[k] for k in ("female", "male")},
                         policy or manifest["policy"], int(manifest["seed"]))
    return LoadedEnsemble(Path(folder), manifest, rt)


# ------------------------------------------------------------------ export

def _onnx_bytes(model: Any, args: tuple[Any, ...], inputs: list[str], outputs: list[str]
                ) -> bytes:
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=ONNX_OPSET,
                          input_names=inputs, output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in [*inputs, *outputs]})
    return buf.getvalue()


def _privacy_only(model: Any) -> Any:
    """The SAN wrapped so its exported graph has one output: the privacy image."""
    from torch import nn

    class PrivacyOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.san = model

        def forward(self, x: Any, same: Any, opp: Any) -> Any:
            return self.san(x, same, opp)[1]

    return PrivacyOnly().eval()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"san_search": __version__}
    for pkg in ("torch", "onnx", "onnxruntime", "safetensors", "numpy", "mlflow", "ray",
                "optuna", "timm"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def model_card(manifest: dict[str, Any]) -> str:
    members = manifest["members"]
    pre = manifest["preprocessing"]
    lines = [
        f"# SAN ensemble from search `{manifest['search']}`",
        "",
        f"{len(members)} semi-adversarial networks that rewrite {pre['size']}x{pre['size']} "
        "grayscale faces so gender classifiers fail while face matchers still verify the "
        f"person. Policy `{manifest['policy']}` (seed {manifest['seed']}): "
        + ("each image goes through one member, chosen by a hash of its pixels."
           if manifest["policy"] == "random" else "every member in turn."),
        "",
        "![trade-off](trade_off.png)",
        "",
        "## Use",
        "```",
        "san-search perturb --ensemble <this folder> --input FACES --output OUT",
        "```",
        "or `mlflow.pyfunc.load_model(\"models:/<name>@champion\")` and `predict` on a uint8 "
        "array (N, S, S). Loading checks the SHA-256 of every file listed in `manifest.json`.",
        "",
        "## Members",
        "",
        "| member | MLflow run | val privacy | val utility | val SSIM | autoencoder | aux "
        "gender | aux matcher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in members:
        c, v = m["config"], m["val"]
        arch = (f"{c['autoencoder']} d{c['depth']} w{c['width']}" if c["autoencoder"] ==
                "san_conv" else c["autoencoder"])
        lines.append(f"| {m['name']} | `{m['run_id']}` | {v['privacy_mean']:.3f} | "
                     f"{v['utility_mean']:.3f} | {v['ssim']:.3f} | {arch} | "
                     f"{'+'.join(c['aux_gender'])} | {c['aux_matcher']} |")
    lines += ["", "## Test pool (never used during search or selection)", "",
              "| method | privacy | privacy (worst) | utility | utility (worst) | SSIM |",
              "|---|---|---|---|---|---|"]
    for r in manifest["test"]:
        lines.append(f"| {r['method']} | {r['privacy_mean']:.3f} | {r['privacy_min']:.3f} | "
                     f"{r['utility_mean']:.3f} | {r['utility_min']:.3f} | {r['ssim']:.3f} |")
    per = sorted(k for k in manifest["test"][0] if k.startswith(("privacy.", "utility.")))
    lines += ["", "Per evaluator (privacy = 1 - |2 AUC - 1| per gender classifier; utility = "
              "TAR@1%FAR retention per matcher):", "", "```",
              format_rows(manifest["test"], per, "method"), "```", "",
              "## Provenance", "",
              f"- data fingerprint `{manifest['data_fingerprint']}`, zoo fingerprint "
              f"`{manifest['zoo_fingerprint']}`",
              f"- preprocessing: {pre}",
              f"- gender predictor: `{manifest['predictor']['name']}` "
              f"({manifest['predictor']['arch']})",
              f"- ONNX Runtime vs PyTorch, max abs difference: {manifest['onnx_check']}",
              f"- versions: {manifest['versions']}",
              f"- exported {manifest['created']}", ""]
    return "\n".join(lines)


def export_ensemble(sel: Selection, out: str | Path, *, policy: str | None = None,
                    overwrite: bool = False, log: Log = print) -> Path:
    """Write and verify the export folder for `sel`; returns its path."""
    import torch
    from safetensors.numpy import save as np_save
    from safetensors.torch import save as st_save

    from san_search.data import open_dataset
    from san_search.runtime import check_policy
    from san_search.train import load_san
    from san_search.zoo import open_zoo

    policy = check_policy(policy or sel.policy)
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise EnsembleError(f"{out} already exists: pick another --out or pass --overwrite")
    ds = open_dataset(sel.data)
    if ds.fingerprint != sel.data_fingerprint:
        raise EnsembleError(f"the dataset at {sel.data} changed since the ensemble was chosen")
    zoo = open_zoo(sel.zoo, expect_fingerprint=ds.fingerprint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "members").mkdir(parents=True)
    try:
        size = ds.size
        sample = ds.split("val").images[:16].astype(np.float32)[:, None] / 255.0
        protos = {k: ds.prototypes[k].astype(np.float32) for k in ("female", "male")}
        (tmp / "prototypes.safetensors").write_bytes(np_save(protos))
        same = np.repeat(protos["male"][None, None], len(sample), 0)
        opp = np.repeat(protos["female"][None, None], len(sample), 0)
        members, check = [], {}
        import onnxruntime as ort

        for i, m in enumerate(sel.members):
            model, cfg = load_san(m["checkpoint"])
            wfile, ofile = f"members/member_{i}.safetensors", f"members/member_{i}.onnx"
            (tmp / wfile).write_bytes(st_save({k: v.contiguous() for k, v in
                                               model.state_dict().items()}))
            wrapped = _privacy_only(model)
            args = tuple(torch.from_numpy(a) for a in (sample, same, opp))
            onnx = _onnx_bytes(wrapped, args, ["x", "proto_same", "proto_opp"], ["privacy"])
            (tmp / ofile).write_bytes(onnx)
            sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            got = sess.run(["privacy"], {"x": sample, "proto_same": same, "proto_opp": opp})[0]
            with torch.no_grad():
                want = wrapped(*args).numpy()
            diff = float(np.abs(got - want).max())
            check[m["name"]] = diff
            if diff > ONNX_TOLERANCE:
                raise EnsembleError(f"member {m['name']}: ONNX Runtime and PyTorch differ by "
                                    f"{diff:.2e} (> {ONNX_TOLERANCE:g})")
            members.append({**{k: m[k] for k in ("name", "run_id", "val")},
                            "config": dataclasses.asdict(cfg), "weights": wfile, "onnx": ofile})
            log(f"  member {i} ({m['name']}): weights, ONNX (max abs diff {diff:.1e})")
        g = zoo.load(sel.predictor).eval()
        meta = zoo.entries[sel.predictor]
        (tmp / "gender_predictor.safetensors").write_bytes(
            st_save({k: v.contiguous() for k, v in g.state_dict().items()}))
        g_onnx = _onnx_bytes(g, (torch.from_numpy(sample),), ["x"], ["logits"])
        (tmp / "gender_predictor.onnx").write_bytes(g_onnx)
        sess = ort.InferenceSession(g_onnx, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            gdiff = float(np.abs(sess.run(["logits"], {"x": sample})[0]
                                 - g(torch.from_numpy(sample)).numpy()).max())
        check[sel.predictor] = gdiff
        if gdiff > ONNX_TOLERANCE:
            raise EnsembleError(f"gender predictor: ONNX and PyTorch differ by {gdiff:.2e}")
        manifest: dict[str, Any] = {
            "format": FORMAT, "search": sel.search, "created":
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "policy": policy, "seed": sel.seed, "members": members,
            "predictor": {"name": sel.predictor, "arch": meta["arch"], "image_size": size,
                          "weights": "gender_predictor.safetensors",
                          "onnx": "gender_predictor.onnx"},
            "prototypes": "prototypes.safetensors",
            "preprocessing": {"size": size, "crop": ds.info.get("crop"),
                              "detect": bool(ds.info.get("detect", False)),
                              "format": ds.info.get("format"), "grayscale": True},
            "selection": sel.settings, "val": sel.val_table, "test": sel.test_table,
            "data_fingerprint": sel.data_fingerprint, "zoo_fingerprint": zoo.data_fingerprint,
            "mlflow": {"tracking_uri": sel.tracking_uri, "ensemble_run_id": sel.ensemble_run_id,
                       "parent_run_id": sel.parent_run_id},
            "onnx_check": {k: float(f"{v:.3g}") for k, v in check.items()},
            "versions": _versions(),
        }
        import matplotlib.pyplot as plt

        fig = trade_off_figure(sel)
        fig.savefig(tmp / "trade_off.png", dpi=120)
        plt.close(fig)
        (tmp / "README.md").write_text(model_card(manifest))
        manifest["files"] = {p.relative_to(tmp).as_posix(): sha256_file(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        # verify what was written: both backends load it and agree with the checkpoints
        x = ds.split("val").images[:32]
        ref = load_ensemble(tmp, "torch").runtime.perturb(x)
        onx = load_ensemble(tmp, "onnx").runtime.perturb(x)
        if float(np.abs(ref - onx).max()) > ONNX_TOLERANCE:
            raise EnsembleError("the exported ensemble's ONNX and PyTorch outputs disagree")
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"exported {len(members)} member(s) to {out} (policy {policy}); ONNX max abs diff "
        f"{max(check.values()):.1e}")
    return out


# ------------------------------------------------------------------ MLflow Model Registry

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def register(folder: str | Path, tracking_uri: str, run_id: str, name: str,
             alias: str = "champion", log: Log = print) -> dict[str, Any]:
    """Log the export folder as a pyfunc model (models-from-code: nothing pickled) into the
    ensemble's MLflow run, register it as `name` and point `alias` at the new version."""
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    import mlflow

    loaded = load_ensemble(folder)
    s = loaded.image_size
    example = np.zeros((2, s, s), dtype=np.uint8)
    example[1] = 128
    signature = infer_signature(example, loaded.runtime.perturb(example),
                                params={"policy": loaded.manifest["policy"]})
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="ensemble", python_model=str(PYFUNC_CODE),
            artifacts={"ensemble": str(Path(folder).absolute())}, signature=signature,
            registered_model_name=name,
            pip_requirements=[f"{k}=={v}" for k, v in _versions().items()
                              if k in ("torch", "onnxruntime", "safetensors", "numpy")])
    client = MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "search", loaded.manifest["search"])
    client.update_model_version(name, version, description=(
        f"SAN ensemble of {len(loaded.manifest['members'])} from search "
        f"{loaded.manifest['search']}, policy {loaded.manifest['policy']}"))
    uri = f"models:/{name}@{alias}"
    log(f"registered {name} version {version}, alias {alias!r}: load with "
        f"mlflow.pyfunc.load_model({uri!r})")
    return {"name": name, "version": version, "alias": alias, "uri": uri,
            "model_uri": info.model_uri}
