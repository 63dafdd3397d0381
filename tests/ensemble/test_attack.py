"""The adaptive attacker (`ensemble.attack`) on the package's tiny export: what it trains on
(never a test identity; perturbed and original images in the stronger variant), fixed seeds,
the CLI's attack.json, the model card, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from san_search.cli import main
from san_search.data.splits import identity_genders
from san_search.ensemble import attack
from san_search.ensemble.attack import ATTACK_FILE, ATTACK_MIN, DATA, INITS, Budget, column
from san_search.ensemble.orchestration import Selection

TINY = Budget(images=24, epochs=1, lr=2e-3, batch=12, seed=0)
TINY_FLAGS = ["--attack-images", "24", "--attack-epochs", "1", "--attack-batch", "12"]
METHODS = ["ensemble (random)", "ensemble (chain)", "best single member"]


def _identities(view: Any) -> set[str]:
    return set(view.identity.to_pylist())


@pytest.fixture(scope="module")
def cli_run(exported: tuple[Path, Selection], problem: tuple[Path, Path],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`san-search attack` on a copy of the export, every set the attacker trains on kept."""
    from san_search.zoo import store as zoo_mod

    data, zoo_dir = problem
    folder = tmp_path_factory.mktemp("attack") / "export"
    shutil.copytree(exported[0], folder)
    seen: list[Any] = []
    real = zoo_mod.train_model

    def spy(spec: Any, path: Any, log: Any = print, *, train: Any = None) -> Any:
        seen.append(train)
        return real(spec, path, log, train=train)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo_mod, "train_model", spy)
        rc = main(["attack", "--ensemble", str(folder), "--data", str(data), "--zoo",
                   str(zoo_dir), *TINY_FLAGS])
    return {"rc": rc, "folder": folder, "seen": seen, "data": data}


@pytest.mark.slow  # the CLI run: 4-5 methods x 8 attackers, ~2 min on a shared 2-core machine
def test_the_attacker_never_trains_on_a_test_identity(cli_run: dict[str, Any],
                                                     exported: tuple[Path, Selection]) -> None:
    from san_search.data import open_dataset

    ds = open_dataset(cli_run["data"])
    train, test = ds.split("train"), ds.split("test")
    seen = cli_run["seen"]
    baselines = [r for r in exported[1].test_table if r.get("sigma") is not None]
    assert baselines[0]["baseline"] == "noise"  # blur matches only where it reaches as far
    # methods (3 + the matched baselines) x attackers x inits x data
    assert len(seen) == (3 + len(baselines)) * 2 * 2 * 2
    test_ids = set(identity_genders(test.identity_index, test.gender))
    for view in seen:
        assert view is not None  # always its own set, never the dataset's train split as is
        ids = set(identity_genders(view.identity_index, view.gender))
        assert ids.isdisjoint(test_ids)
        assert ids <= set(identity_genders(train.identity_index, train.gender))
        assert _identities(view).isdisjoint(_identities(test))
        assert _identities(view) <= _identities(train)


@pytest.mark.slow
def test_the_stronger_variant_trains_on_perturbed_and_original_images(
        cli_run: dict[str, Any]) -> None:
    from san_search.data import open_dataset

    train = open_dataset(cli_run["data"]).split("train")
    rows = attack.train_rows(train, TINY)
    originals = np.asarray(train.images[rows])
    plain = [v for v in cli_run["seen"] if v.name == "attack-perturbed"]
    plus = [v for v in cli_run["seen"] if v.name == "attack-plus_originals"]
    assert len(plain) == len(plus) == len(cli_run["seen"]) // 2
    for p, q in zip(plain, plus, strict=True):
        assert len(p) == len(rows) and len(q) == 2 * len(rows)
        np.testing.assert_array_equal(q.images[: len(rows)], p.images)  # the perturbed ones
        np.testing.assert_array_equal(q.images[len(rows):], originals)  # and the originals
        np.testing.assert_array_equal(q.gender, np.concatenate([train.gender[rows]] * 2))
    assert not np.array_equal(plain[0].images, originals)  # perturbed means changed


@pytest.mark.slow
def test_the_cli_writes_attack_json_with_every_column_and_the_card_shows_it(
        cli_run: dict[str, Any]) -> None:
    from san_search.ensemble.serving import load_ensemble

    assert cli_run["rc"] == 0
    folder = cli_run["folder"]
    result = json.loads((folder / ATTACK_FILE).read_text())
    assert result["budget"] == {"images": 24, "epochs": 1, "lr": 2e-3, "batch": 12, "seed": 0}
    assert result["train_images"] == 24
    assert "groups" not in result  # the synthetic problem has no skin-tone groups
    assert [a["role"] for a in result["attackers"]] == ["test", "aux"]
    assert result["attackers"][0]["model"] == "g_test"
    labels = [r["method"] for r in result["rows"]]
    assert labels[:3] == METHODS and labels[3].startswith("noise sigma")
    table = json.loads((folder / "manifest.json").read_text())["test"]
    baselines = [r for r in table if r.get("sigma") is not None]
    assert labels[3:] == [r["method"] for r in baselines]
    # each baseline row is attacked as its own kind (blur as blur, not as noise of its sigma)
    assert [r.get("baseline") for r in result["rows"]][3:] == [r["baseline"] for r in baselines]
    cols = [column(a["model"], i, d) for a in result["attackers"] for i in INITS for d in DATA]
    assert len(cols) == 8
    for r in result["rows"]:
        for c in ("privacy_mean", "privacy_min", *cols, ATTACK_MIN):
            assert 0.0 <= r[c] <= 1.0, (r["method"], c)
        assert r[ATTACK_MIN] == min(r[c] for c in cols)
        assert r[ATTACK_MIN] == r[r["attack_worst"]]
        assert r["privacy_min"] <= r["privacy_mean"]
    card = (folder / "README.md").read_text()
    assert "## Adaptive attacker" in card
    assert "| ensemble (chain) |" in card.split("## Adaptive attacker")[1]
    loaded = load_ensemble(folder, notice=lambda _: None)  # the card's new hash verifies
    assert ATTACK_FILE in loaded.manifest["files"]


@pytest.mark.slow  # three attacks
def test_fixed_seeds_give_the_same_numbers_twice(exported: tuple[Path, Selection],
                                                 problem: tuple[Path, Path]) -> None:
    from san_search.data import open_dataset
    from san_search.ensemble.serving import load_ensemble
    from san_search.zoo.store import open_zoo

    data, zoo_dir = problem
    ds = open_dataset(data)
    zoo = open_zoo(zoo_dir, ds.fingerprint)
    rt = load_ensemble(exported[0], notice=lambda _: None).runtime
    runs = [attack.run_attack(rt, 0, ds, zoo, TINY, (), log=lambda _: None) for _ in range(2)]
    a, b = ([{k: v for k, v in r.items()} for r in run["rows"]] for run in runs)
    assert [r["method"] for r in a] == METHODS  # no noise row without a test table
    assert a == b
    other = attack.run_attack(rt, 0, ds, zoo, Budget(24, 1, 2e-3, 12, seed=1), (),
                              log=lambda _: None)["rows"]
    assert other != a  # the seed matters: the numbers are not constant


def test_the_training_sets_hold_train_identities_only_and_both_kinds_of_image(
        problem: tuple[Path, Path]) -> None:
    """The fast check of what `_attack_method` trains on (the slow CLI run spies on it)."""
    from san_search.data import open_dataset

    ds = open_dataset(problem[0])
    train, test = ds.split("train"), ds.split("test")
    rows = attack.train_rows(train, TINY)
    assert len(rows) == 24 and len(set(rows.tolist())) == 24
    assert np.array_equal(rows, attack.train_rows(train, TINY))  # seeded
    fake = 255 - np.asarray(train.images[rows])  # a stand-in for the ensemble's output
    plain = attack.attack_train_set(train, rows, fake, with_originals=False)
    plus = attack.attack_train_set(train, rows, fake, with_originals=True)
    test_ids = set(identity_genders(test.identity_index, test.gender))
    for view in (plain, plus):
        assert set(identity_genders(view.identity_index, view.gender)).isdisjoint(test_ids)
        assert _identities(view).isdisjoint(_identities(test))
    np.testing.assert_array_equal(plain.images, fake)
    np.testing.assert_array_equal(plus.images, np.concatenate([fake, train.images[rows]]))
    np.testing.assert_array_equal(plus.gender, np.concatenate([train.gender[rows]] * 2))
    assert len(plus.identity) == len(plus.source_path) == 48


def test_a_missing_ensemble_folder_is_named(problem: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data, zoo_dir = problem
    gone = tmp_path / "nope"
    rc = main(["attack", "--ensemble", str(gone), "--data", str(data), "--zoo", str(zoo_dir),
               *TINY_FLAGS])
    assert rc == 2
    assert f"--ensemble {gone}: no such folder" in capsys.readouterr().err
    rc = main(["attack", "--ensemble", str(tmp_path), "--data", str(data), "--zoo",
               str(zoo_dir)])
    assert rc == 2
    assert "is not an exported ensemble (manifest.json missing)" in capsys.readouterr().err


def test_a_dataset_of_another_size_is_refused(exported: tuple[Path, Selection],
                                              problem: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.data import BuildOptions, synth

    other = tmp_path / "data24"
    synth(other, identities=12, images_per_identity=3, size=24, options=BuildOptions(pairs=10))
    rc = main(["attack", "--ensemble", str(exported[0]), "--data", str(other), "--zoo",
               str(problem[1]), *TINY_FLAGS])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"--data {other}: its images are 24x24 px" in err
    assert "takes 16x16" in err
    assert not (exported[0] / ATTACK_FILE).exists()


def test_a_bad_budget_names_its_option() -> None:
    with pytest.raises(Exception, match="--attack-images must be at least 1, got 0"):
        Budget(images=0)
    with pytest.raises(Exception, match="--attack-lr must be positive"):
        Budget(lr=0.0)


def test_the_attack_is_logged_nested_under_the_ensemble_run_with_its_budget(
        tmp_path: Path) -> None:
    from san_search import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "attack")
    client = tracking.client_for(uri)
    ens = client.create_run(exp_id, run_name="s-ensemble").info.run_id
    cols = {column("g", i, d): 0.25 for i in INITS for d in DATA}
    result = {"budget": {"images": 24, "epochs": 1, "lr": 0.002, "batch": 12, "seed": 0},
              "train_images": 24, "attackers": [{"model": "g", "arch": "paper_cnn",
                                                 "role": "test"}],
              "rows": [{"method": "ensemble (random)", "privacy_mean": 0.5,
                        "privacy_min": 0.4, **cols, ATTACK_MIN: 0.25,
                        "attack_worst": column("g", "scratch", "perturbed")}]}
    rid = attack.log_attack(result, uri, ens, "s")
    run = client.get_run(rid)
    assert run.data.tags["mlflow.parentRunId"] == ens
    assert run.data.tags[tracking.KIND_TAG] == "attack"
    assert run.data.params["attack_images"] == "24"
    assert run.data.params["attack_epochs"] == "1"
    assert run.data.params["attackers"] == "g:paper_cnn"
    assert run.data.metrics["test_ensemble_random_attack_privacy_min"] == 0.25
    assert run.data.metrics["test_ensemble_random_privacy_mean"] == 0.5
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(rid)] == [ATTACK_FILE]  # no groups, no table


def _grouped() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """8 test faces: light f, f, m, m then dark f, f, m, m; the fixed classifier separates
    light faces and calls every dark face male; three attackers, each with its own gaps."""
    group = np.array(["light"] * 4 + ["dark"] * 4, dtype=object)
    gender = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int8)
    fixed = {"f": np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9])}
    attacked = {  # perturbed: one perfect on dark faces only, one at chance everywhere
        column("a", "scratch", "perturbed"): np.array([.4, .6, .6, .4, .1, .1, .9, .9]),
        column("b", "scratch", "perturbed"): np.array([.4, .6, .6, .4, .4, .6, .6, .4]),
        # with originals: perfect on light faces, at chance on dark ones
        column("a", "scratch", "plus_originals"): np.array([.1, .2, .8, .9, .6, .4, .5, .55])}
    return group, gender, fixed, attacked


def test_per_group_attacker_privacy_by_hand() -> None:
    group, gender, fixed, attacked = _grouped()
    rows = attack.group_rows(group, gender, fixed, attacked)
    cells = {(r["group"], r["gender"]): r for r in rows}
    assert [(r["group"], r["gender"], r["images"]) for r in rows] == [
        ("light", "all", 4), ("light", "female", 2), ("light", "male", 2),
        ("dark", "all", 4), ("dark", "female", 2), ("dark", "male", 2)]
    light, dark = cells["light", "all"], cells["dark", "all"]
    assert light["privacy_mean"] == 0.0 and dark["privacy_mean"] == 1.0  # the fixed one
    # perturbed: both attackers are at chance on light faces; `a` separates dark ones
    assert light["attack_privacy_min.perturbed"] == 1.0
    assert dark["attack_privacy_min.perturbed"] == 0.0
    assert light["attack_privacy_min.plus_originals"] == 0.0
    assert dark["attack_privacy_min.plus_originals"] == 1.0
    assert light[ATTACK_MIN] == dark[ATTACK_MIN] == 0.0
    # a one-gender cell against all the men: the fixed classifier's dark women (.9, .9)
    # against (.8, .9, .9, .9) give AUC 3/8; the attacker's (.6, .4) against
    # (.8, .9, .5, .55) give 6/8
    assert cells["dark", "female"]["privacy_mean"] == 0.75
    assert cells["dark", "female"]["attack_privacy_min.plus_originals"] == 0.5
    # a constant attacker knows nothing: every cell stays at 1, whatever it answers
    flat = attack.group_rows(group, gender, fixed,
                             {column("c", "scratch", d): np.full(8, 0.9) for d in DATA})
    assert all(r[ATTACK_MIN] == 1.0 for r in flat)


def test_the_printout_card_and_run_give_the_attack_per_group(tmp_path: Path) -> None:
    from san_search import tracking
    from san_search.ensemble.card import _card_attack

    group, gender, fixed, attacked = _grouped()
    groups = [{"method": "ensemble (random)", **r}
              for r in attack.group_rows(group, gender, fixed, attacked)]
    cols = {column("a", i, d): 0.5 for i in INITS for d in DATA}
    result = {"budget": {"images": 24, "epochs": 1, "lr": 0.002, "batch": 12, "seed": 0},
              "train_images": 24, "test_images": 8,
              "attackers": [{"model": "a", "arch": "paper_cnn", "role": "test"}],
              "rows": [{"method": "ensemble (random)", "privacy_mean": 0.5,
                        "privacy_min": 0.5, **cols, ATTACK_MIN: 0.5,
                        "attack_worst": column("a", "scratch", "perturbed")}],
              "groups": groups}
    text = attack.format_attack(result)
    assert "per skin-tone group x gender" in text
    line = next(x for x in text.splitlines() if x.startswith("ensemble (random) / dark "))
    assert line.split()[-6:] == ["all", "4", "1.000", "0.000", "1.000", "0.000"]
    card = "\n".join(_card_attack(result))
    assert "### Adaptive attacker by skin-tone group" in card
    assert "| ensemble (random) | dark | female | 2 | 0.750 | 0.000 | 0.500 | 0.000 |" in card
    assert "by skin-tone group" not in "\n".join(_card_attack({**result, "groups": []}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "attack")
    client = tracking.client_for(uri)
    ens = client.create_run(exp_id, run_name="s-ensemble").info.run_id
    rid = attack.log_attack(result, uri, ens, "s")
    table = json.loads(Path(client.download_artifacts(rid, attack.GROUPS_TABLE,
                                                      str(tmp_path))).read_text())
    got = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["group"] for r in got[:4]] == ["light", "light", "light", "dark"]
    assert got[3]["attack_privacy_min.perturbed"] == 0.0
