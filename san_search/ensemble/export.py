"""The exported ensemble (`san-search ensemble export`): writing a folder anyone can load and
check, verifying it, and registering it in the MLflow Model Registry.

Layout of an export folder:
  manifest.json                 members (MLflow run ids, configs, val metrics), policy, seed,
                                predictor, preprocessing, a copy of the selection (settings,
                                val and test tables), data and zoo fingerprints, package
                                versions, ONNX check, SHA-256 of every file
  members/member_<i>.safetensors   each SAN's weights
  members/member_<i>.onnx          the same SAN for ONNX Runtime
  gender_predictor.safetensors / .onnx   the auxiliary classifier that picks prototypes
  prototypes.safetensors        the female and male prototype faces
  (every graph takes (B, C, S, S): C = 1 for a gray ensemble, 3 for rgb, `preprocessing.color`)
  trade_off.png, README.md      the model card (test pool: privacy, verification utility,
                                and rank-1 / rank-5 identification in three scenarios)
  attack.json                   the adaptive attacker's result (`san_search.ensemble.attack`), when
                                `select --attack` or `san-search attack` ran
  manifest.sig.json             with `--sign KEY`: the Ed25519 signature over manifest.json's
                                exact bytes (`ensemble.signing`; not hashed: it signs them)
  .san-search-output            the marker that lets `--overwrite` replace the folder (not
                                hashed: written after the manifest, just before the rename)

Writers put each part in place; every ONNX graph is read back and checked against its PyTorch
module as it is written, and the finished folder is verified by loading it with both
backends (`serving.load_ensemble`, which checks the SHA-256 of every file and, in a signed
export, the signature with the signer's public key) and comparing them. The folder is built
beside its destination and renamed into place once verified, so a failed export leaves
nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from san_search import __version__
from san_search.atomic import write_atomic
from san_search.console import Log
from san_search.ensemble.attack import (
    ATTACK_FILE,
    Budget,
    best_single_of,
    format_attack,
    log_attack,
    run_attack,
    to_json,
)
from san_search.ensemble.card import CARD, model_card, write_card
from san_search.ensemble.orchestration import Selection, advantage_verdict
from san_search.ensemble.serving import (
    FORMAT,
    MANIFEST,
    PROTOTYPES,
    check_policy,
    load_ensemble,
)
from san_search.ensemble.signing import SIGNATURE, fingerprint, load_private_key, sign_manifest
from san_search.errors import EnsembleError
from san_search.outputs import OutputKind, atomic_folder, check_output, json_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from torch import Tensor
    from torch.nn import Module

    from san_search.data.store import PreparedDataset
    from san_search.zoo.store import Zoo

ONNX_TOLERANCE = 1e-3  # max abs difference allowed between ONNX Runtime and PyTorch
ONNX_OPSET = 17
SAMPLE_IMAGES = 16  # val images every ONNX graph is traced and checked on
VERIFY_IMAGES = 32  # val images the finished folder is verified on
PREDICTOR_WEIGHTS, PREDICTOR_ONNX = "gender_predictor.safetensors", "gender_predictor.onnx"
PYFUNC_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"san_search": __version__}
    for pkg in ("torch", "onnx", "onnxruntime", "safetensors", "numpy", "mlflow", "ray",
                "optuna", "timm"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


# ------------------------------------------------------------------ writers

def write_weights(path: Path, model: Module) -> None:
    """A module's state dict as safetensors."""
    from safetensors.torch import save as st_save

    path.write_bytes(st_save({k: v.contiguous() for k, v in model.state_dict().items()}))


def write_onnx(path: Path, model: Module, feeds: dict[str, np.ndarray], outputs: list[str]
               ) -> None:
    """`model` traced on `feeds` (input name -> array), batch axis dynamic."""
    import warnings

    import torch

    args = tuple(torch.from_numpy(a) for a in feeds.values())
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(feeds), output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in [*feeds, *outputs]})
    path.write_bytes(buf.getvalue())


def privacy_only(model: Module) -> Module:
    """The SAN wrapped so its exported graph has one output: the privacy image."""
    from torch import nn

    class PrivacyOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.san = model

        def forward(self, x: Tensor, same: Tensor, opp: Tensor) -> Tensor:
            return self.san(x, same, opp)[1]

    return PrivacyOnly().eval()


def write_prototypes(folder: Path, ds: PreparedDataset) -> dict[str, np.ndarray]:
    """The female and male prototypes, float32 (S, S) or (S, S, 3); returns them."""
    from safetensors.numpy import save as np_save

    protos = {k: ds.prototypes[k].astype(np.float32) for k in ("female", "male")}
    (folder / PROTOTYPES).write_bytes(np_save(protos))
    return protos


def write_member(folder: Path, i: int, member: dict[str, Any], feeds: dict[str, np.ndarray],
                 ds: PreparedDataset) -> tuple[dict[str, Any], float]:
    """Member `i`'s weights and ONNX graph, the graph checked; its manifest entry and the
    ONNX difference. A member trained for the other colour mode than `ds` is refused."""
    from san_search.errors import CandidateError
    from san_search.training.trainer import check_san_color, load_san

    try:
        check_san_color(member["checkpoint"], ds)
    except CandidateError as exc:
        raise EnsembleError(f"member {member['name']}: {exc}") from None
    model, cfg = load_san(member["checkpoint"])
    wfile, ofile = f"members/member_{i}.safetensors", f"members/member_{i}.onnx"
    write_weights(folder / wfile, model)
    wrapped = privacy_only(model)
    write_onnx(folder / ofile, wrapped, feeds, ["privacy"])
    diff = check_onnx(folder / ofile, wrapped, feeds, "privacy")
    if diff > ONNX_TOLERANCE:
        raise EnsembleError(f"member {member['name']}: ONNX Runtime and PyTorch differ by "
                            f"{diff:.2e} (> {ONNX_TOLERANCE:g})")
    entry = {**{k: member[k] for k in ("name", "run_id", "val")}, "config": cfg.to_dict(),
             "weights": wfile, "onnx": ofile}
    return entry, diff


def write_predictor(folder: Path, zoo: Zoo, name: str, sample: np.ndarray) -> float:
    """The gender predictor's weights and ONNX graph, the graph checked; its difference."""
    g = zoo.load(name).eval()
    write_weights(folder / PREDICTOR_WEIGHTS, g)
    write_onnx(folder / PREDICTOR_ONNX, g, {"x": sample}, ["logits"])
    diff = check_onnx(folder / PREDICTOR_ONNX, g, {"x": sample}, "logits")
    if diff > ONNX_TOLERANCE:
        raise EnsembleError(f"gender predictor: ONNX and PyTorch differ by {diff:.2e}")
    return diff


def selection_copy(sel: Selection) -> dict[str, Any]:
    """The manifest's copy of the selection: its settings, both tables and the test pool per
    skin-tone group (`test_groups`, empty without groups)."""
    return {"selection": sel.settings, "val": sel.val_table, "test": sel.test_table,
            "test_groups": sel.test_groups}


def build_manifest(sel: Selection, policy: str, members: list[dict[str, Any]],
                   ds: PreparedDataset, zoo: Zoo, check: dict[str, float]) -> dict[str, Any]:
    """Everything but the file hashes (`write_manifest` adds them)."""
    size = ds.size
    return {
        "format": FORMAT, "search": sel.search, "created":
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "policy": policy, "seed": sel.seed, "members": members,
        "predictor": {"name": sel.predictor, "arch": zoo.entries[sel.predictor]["arch"],
                      "image_size": size, "weights": PREDICTOR_WEIGHTS,
                      "onnx": PREDICTOR_ONNX},
        "prototypes": PROTOTYPES,
        "preprocessing": {"size": size, "crop": ds.info.get("crop"),
                          "detect": bool(ds.info.get("detect", False)),
                          "format": ds.info.get("format"), "color": ds.color},
        **selection_copy(sel),
        "data_fingerprint": sel.data_fingerprint, "zoo_fingerprint": zoo.fingerprint,
        "mlflow": {"tracking_uri": sel.tracking_uri, "ensemble_run_id": sel.ensemble_run_id,
                   "parent_run_id": sel.parent_run_id},
        "onnx_check": {k: float(f"{v:.3g}") for k, v in check.items()},
        "versions": _versions(),
        "licences": zoo.licences(),
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """manifest.json, with the SHA-256 of every file already in `folder`."""
    manifest["files"] = {p.relative_to(folder).as_posix(): sha256_file(p)
                         for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


# ------------------------------------------------------------------ verify

def check_onnx(path: Path, model: Module, feeds: dict[str, np.ndarray], output: str) -> float:
    """Max abs difference between the ONNX graph written at `path` (run by ONNX Runtime)
    and the PyTorch `model` on `feeds`."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    got = sess.run([output], feeds)[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(a) for a in feeds.values())).numpy()
    return float(np.abs(got - want).max())


def verify_export(folder: Path, images: np.ndarray, trust: Ed25519PublicKey | None = None
                  ) -> None:
    """Load what was written on both backends (every hash checked, and the signature with
    `trust`, the signer's public key, when signed) and compare them."""
    def load(backend: str) -> np.ndarray:
        # an unsigned export is checked as unsigned, whatever $SAN_SEARCH_TRUST_KEY says
        return load_ensemble(folder, backend, trust=trust if trust is not None else False,
                             notice=lambda _: None).runtime.perturb(images)

    ref, onx = load("torch"), load("onnx")
    if float(np.abs(ref - onx).max()) > ONNX_TOLERANCE:
        raise EnsembleError("the exported ensemble's ONNX and PyTorch outputs disagree")


# ------------------------------------------------------------------ the step

def _write_all(tmp: Path, sel: Selection, policy: str, ds: PreparedDataset, zoo: Zoo, log: Log
               ) -> tuple[dict[str, Any], dict[str, float]]:
    """Every writer, in order (the manifest last: it hashes the others); the manifest and
    the ONNX check (max abs difference per graph)."""
    from san_search.images import to_nchw

    val_images = ds.split("val").images
    sample = to_nchw(val_images[:SAMPLE_IMAGES]).numpy()  # (B, C, S, S)
    protos = write_prototypes(tmp, ds)
    feeds = {"x": sample,
             "proto_same": np.repeat(to_nchw(protos["male"][None]).numpy(), len(sample), 0),
             "proto_opp": np.repeat(to_nchw(protos["female"][None]).numpy(), len(sample), 0)}
    members, check = [], {}
    for i, m in enumerate(sel.members):
        entry, diff = write_member(tmp, i, m, feeds, ds)
        members.append(entry)
        check[m["name"]] = diff
        log(f"  member {i} ({m['name']}): weights, ONNX (max abs diff {diff:.1e})")
    check[sel.predictor] = write_predictor(tmp, zoo, sel.predictor, sample)
    manifest = build_manifest(sel, policy, members, ds, zoo, check)
    if sel.attack:  # `select --attack` ran: its result ships, hashed, and is in the card
        (tmp / ATTACK_FILE).write_text(to_json(sel.attack))
    write_card(tmp, sel, manifest)
    write_manifest(tmp, manifest)
    return manifest, check


def _is_legacy_export(folder: Path) -> bool:
    """An export written by san-search 0.1 (no marker): manifest.json in the export format."""
    manifest = json_file(folder / MANIFEST)
    return manifest is not None and manifest.get("format") == FORMAT


EXPORT = OutputKind("ensemble export", EnsembleError, _is_legacy_export,
                    f"{MANIFEST} (format {FORMAT})")


def export_ensemble(sel: Selection, out: str | Path, *, policy: str | None = None,
                    overwrite: bool = False, sign: str | Path | None = None,
                    log: Log = print) -> Path:
    """Write and verify the export folder for `sel`; returns its path. `overwrite` replaces
    only an existing export (with the `.san-search-output` marker, or a 0.1 export's
    manifest.json), checked before any work; any other folder is refused and left as is.
    `sign`: an Ed25519 private key file (`san-search keys generate`); manifest.json is signed
    with it inside the folder's build, and the signature verified with both backends."""
    from san_search.data import open_dataset
    from san_search.zoo.store import open_zoo

    policy = check_policy(policy or sel.policy)
    out = Path(out).absolute()
    check_output(out, overwrite, EXPORT)
    key = load_private_key(sign) if sign is not None else None  # fail fast, before any work
    ds = open_dataset(sel.data)
    if ds.fingerprint != sel.data_fingerprint:
        raise EnsembleError(f"the dataset at {sel.data} changed since the ensemble was chosen")
    zoo = open_zoo(sel.zoo, expect=ds)
    # Built beside `out`, renamed into place once verified; the signature and then the marker
    # go in after the manifest, so neither is one of its hashed files.
    with atomic_folder(out, overwrite, EXPORT) as tmp:
        (tmp / "members").mkdir()
        manifest, check = _write_all(tmp, sel, policy, ds, zoo, log)
        if key is not None:
            sig = sign_manifest(tmp, key)
            log(f"  signed {MANIFEST} ({sig.name}) with key {fingerprint(key.public_key())}")
        verify_export(tmp, ds.split("val").images[:VERIFY_IMAGES],
                      key.public_key() if key is not None else None)
    log(f"exported {len(manifest['members'])} member(s) to {out} (policy {policy}); ONNX max "
        f"abs diff {max(check.values()):.1e}")
    verdict = advantage_verdict(sel.test_table)
    if verdict:  # a warning, not a refusal: the user may want it anyway (the card says so too)
        log(verdict)
    return out


# ------------------------------------------------------------------ MLflow Model Registry

def register(folder: str | Path, tracking_uri: str, run_id: str, name: str,
             alias: str = "champion", log: Log = print) -> dict[str, str]:
    """Log the export folder as a pyfunc model (models-from-code: nothing pickled) into the
    ensemble's MLflow run, register it as `name` and point `alias` at the new version."""
    from san_search import tracking

    loaded = load_ensemble(folder, notice=lambda _: None)  # just written: no notice
    example = np.zeros((2, *loaded.face_shape), dtype=np.uint8)
    example[1] = 128
    model = tracking.PyfuncModel(
        code=PYFUNC_CODE, artifacts={"ensemble": str(Path(folder).absolute())},
        example_input=example, example_output=loaded.runtime.perturb(example),
        params={"policy": loaded.manifest["policy"]},
        # The model's code imports san_search (and, through it, timm and the rest of its
        # pinned dependencies): without it the model cannot load in a fresh environment.
        pip_requirements=[f"san-search=={__version__}"] + [
            f"{k}=={v}" for k, v in _versions().items()
            if k in ("torch", "onnxruntime", "safetensors", "numpy")])
    got = tracking.register_pyfunc(
        tracking_uri, run_id, model, name=name, alias=alias, artifact_name="ensemble",
        tags={"search": loaded.manifest["search"]},
        description=(f"SAN ensemble of {len(loaded.manifest['members'])} from search "
                     f"{loaded.manifest['search']}, policy {loaded.manifest['policy']}"))
    uri = f"models:/{name}@{alias}"
    log(f"registered {name} version {got.version}, alias {alias!r}: load with "
        f"mlflow.pyfunc.load_model({uri!r})")
    return {"name": name, "version": got.version, "alias": alias, "uri": uri,
            "model_uri": got.model_uri}


# ------------------------------------------------------------------ the attack, into an export

def refresh_card(folder: Path, result: dict[str, Any], log: Log = print) -> None:
    """Put the attack into the export's model card: README.md re-rendered with its section,
    and manifest.json's hashes of README.md and attack.json updated, so the folder still
    verifies. A signed export is left as it is (a new manifest would need the signer's key):
    attack.json then lies beside it, unhashed, and the card says nothing of it."""
    if (folder / SIGNATURE).exists():
        log(f"note: {folder} is signed; its model card and manifest are left unchanged "
            f"({ATTACK_FILE} is beside them, outside the signed files)")
        return
    manifest = json.loads((folder / MANIFEST).read_text())
    write_atomic(folder / CARD, model_card(manifest, result))
    for name in (CARD, ATTACK_FILE):
        manifest["files"][name] = sha256_file(folder / name)
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2))


def attack_export(folder: str | Path, data: str | Path, zoo_dir: str | Path, budget: Budget,
                  *, mlflow: bool = True, log: Log = print, allow_unsigned: bool = False
                  ) -> dict[str, Any]:
    """Attack the export at `folder` with the dataset at `data` and its zoo: attack.json in
    the folder (atomically), the model card's attack section, and (with `mlflow`) a run
    nested under the ensemble's MLflow run when the export names one; its server is checked
    before the attack starts."""
    from san_search.data import open_dataset
    from san_search.ensemble.serving import load_ensemble
    from san_search.zoo.store import open_zoo

    folder = Path(folder).absolute()
    if not folder.is_dir():
        raise EnsembleError(f"--ensemble {folder}: no such folder (give the folder that "
                            "`san-search ensemble export` wrote)")
    if not (folder / MANIFEST).is_file():
        raise EnsembleError(f"--ensemble {folder} is not an exported ensemble ({MANIFEST} "
                            "missing)")
    loaded = load_ensemble(folder, allow_unsigned=allow_unsigned)
    run = loaded.manifest.get("mlflow", {}) if mlflow else {}
    if run.get("tracking_uri") and run.get("ensemble_run_id"):
        from san_search import tracking

        tracking.check_reachable(run["tracking_uri"])  # fail fast, before minutes of training
    ds = open_dataset(data)
    side = loaded.image_size
    if ds.size != side:
        raise EnsembleError(f"--data {data}: its images are {ds.size}x{ds.size} px, but the "
                            f"ensemble at {folder} takes {side}x{side}; give the dataset it "
                            "was made for")
    if ds.fingerprint != loaded.manifest.get("data_fingerprint"):
        log(f"note: --data {data} is not the dataset the ensemble was chosen on; its test "
            "split may hold faces the ensemble trained on")
    zoo = open_zoo(zoo_dir, expect=ds)
    result = run_attack(loaded.runtime, best_single_of(loaded.manifest), ds, zoo, budget,
                        loaded.manifest.get("test", []), log)
    write_atomic(folder / ATTACK_FILE, to_json(result))
    log(format_attack(result))
    refresh_card(folder, result, log)
    if run.get("tracking_uri") and run.get("ensemble_run_id"):
        rid = log_attack(result, run["tracking_uri"], run["ensemble_run_id"],
                         loaded.manifest["search"])
        log(f"logged to MLflow run {rid} (nested under the ensemble's run)")
    else:
        log(("note: the export names no MLflow ensemble run" if mlflow else "--no-mlflow")
            + f": the attack is in {folder / ATTACK_FILE} only")
    log(f"written {folder / ATTACK_FILE}")
    return result
