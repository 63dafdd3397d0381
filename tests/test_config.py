"""Settings files: every shipped YAML validates; bad keys and values name file, entry, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from san_search.config import ConfigError, load_zoo_spec
from san_search.zoo.store import load_spec

ZOOS = sorted((Path(__file__).resolve().parents[1] / "san_search" / "zoos").glob("*.yaml"))
# pretrained32.yaml adds two pretrained matchers to a trained zoo: not a whole zoo by itself
WHOLE_ZOOS = [p for p in ZOOS if p.name != "pretrained32.yaml"]


@pytest.mark.parametrize("path", WHOLE_ZOOS, ids=[p.name for p in WHOLE_ZOOS])
def test_shipped_zoo_yaml_validates(path: Path) -> None:
    spec = load_spec(path)
    roles = {(m.kind, m.role) for m in spec.models}
    assert roles == {(k, r) for k in ("gender", "matcher") for r in ("aux", "val", "test")}


def test_default_zoo_has_the_promised_pools() -> None:
    spec = load_spec(next(p for p in ZOOS if p.name == "default.yaml"))
    count = {(k, r): [m.arch for m in spec.models if (m.kind, m.role) == (k, r)]
             for k in ("gender", "matcher") for r in ("aux", "val", "test")}
    assert len(count["gender", "aux"]) >= 3
    assert len(count["gender", "val"]) >= 2 and len(count["gender", "test"]) >= 2
    assert all(len(count["matcher", r]) >= 1 for r in ("aux", "val", "test"))
    for kind in ("gender", "matcher"):  # no architecture shared across roles
        archs = [a for r in ("aux", "val", "test") for a in set(count[kind, r])]
        assert len(archs) == len(set(archs)), kind


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "zoo.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_entry_and_allowed(tmp_path: Path) -> None:
    p = _write(tmp_path, "models:\n  - {name: g, kind: gender, arch: paper_cnn, role: aux, "
                         "epoch: 3}\n")
    with pytest.raises(ConfigError) as exc:
        load_zoo_spec(p)
    msg = str(exc.value)
    assert f"{p}: models[0] (g): unknown key 'epoch'; did you mean 'epochs'?" in msg
    assert "allowed: arch, batch_size" in msg


def test_bad_role_and_type(tmp_path: Path) -> None:
    p = _write(tmp_path, "models:\n  - {name: g, kind: gender, arch: paper_cnn, role: judge}\n")
    with pytest.raises(ConfigError, match=r"models\[0\] \(g\): key 'role': 'judge' is not one of "
                                          r"aux, val, test"):
        load_zoo_spec(p)
    p = _write(tmp_path, "models:\n  - {name: g, kind: gender, arch: paper_cnn, role: aux, "
                         "epochs: many}\n")
    with pytest.raises(ConfigError, match=r"key 'epochs': expected an integer, got 'many'"):
        load_zoo_spec(p)


def test_duplicate_names_and_top_level_typo(tmp_path: Path) -> None:
    p = _write(tmp_path, "models:\n  - {name: g, kind: gender, arch: paper_cnn, role: aux}\n"
                         "  - {name: g, kind: gender, arch: resnet10t, role: val}\n")
    with pytest.raises(ConfigError, match="model name 'g' is used twice"):
        load_zoo_spec(p)
    p = _write(tmp_path, "default:\n  epochs: 2\nmodels: []\n")
    with pytest.raises(ConfigError, match="unknown key 'default' \\(allowed: defaults, models\\)"):
        load_zoo_spec(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"settings file not found: .*nope\.yaml"):
        load_zoo_spec(tmp_path / "nope.yaml")


CANDIDATES = sorted((Path(__file__).resolve().parents[1] / "san_search" / "candidates")
                    .glob("*.yaml"))


@pytest.mark.parametrize("path", CANDIDATES, ids=[p.name for p in CANDIDATES])
def test_shipped_candidate_yaml_validates_against_the_default_zoo(path: Path) -> None:
    from san_search.config import load_candidate

    cfg = load_candidate(path)
    zoo = load_spec(ZOOS[0].parent / "default.yaml")
    aux = {m.name for m in zoo.models if m.role == "aux"}
    assert set(cfg.aux_gender) | {cfg.aux_matcher} <= aux


def test_candidate_bad_values(tmp_path: Path) -> None:
    from san_search.config import load_candidate

    p = tmp_path / "c.yaml"
    p.write_text("matcher_distance: l1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'matcher_distance': 'l1' is not one of "
                                          r"mse, cosine"):
        load_candidate(p)
    p.write_text("w_gender: -1\n")
    with pytest.raises(ConfigError, match="key 'w_gender' must be >= 0, got -1.0"):
        load_candidate(p)


def test_candidate_round_trips_through_its_one_serialised_form() -> None:
    from san_search.config import CandidateConfig

    cfg = CandidateConfig(aux_gender=("g_a", "g_b"), width=8, lr=3e-4)
    d = cfg.to_dict()
    assert d["aux_gender"] == "g_a+g_b"
    assert cfg.as_params()["aux_gender"] == "g_a+g_b"
    assert CandidateConfig.from_dict(d) == cfg
    assert CandidateConfig.from_dict({**d, "aux_gender": ["g_a", "g_b"]}) == cfg  # old JSON
    with pytest.raises(ConfigError, match=r"ckpt: unknown key 'learning_rate'"):
        CandidateConfig.from_dict({**d, "learning_rate": 0.1}, "ckpt")


def test_resources_live_apart_from_the_candidate(tmp_path: Path) -> None:
    from san_search.config import CandidateConfig, TrainResources, load_candidate_file

    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.01\nresources: {num_workers: 2, cpus_per_worker: 0.5}\n")
    cfg, res = load_candidate_file(p)
    assert cfg.lr == 0.01 and "cpus_per_worker" not in cfg.to_dict()
    assert res == TrainResources(num_workers=2, cpus_per_worker=0.5)
    assert res.per_worker() == {"CPU": 0.5}
    # The old flat keys are refused with where they go now.
    p.write_text("lr: 0.01\ncpus_per_worker: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'cpus_per_worker' moved under "
                                          r"'resources:'.*resources: \{cpus_per_worker: 2\}"):
        load_candidate_file(p)
    p.write_text("resources: {num_workers: 0}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: resources: need num_workers >= 1"):
        load_candidate_file(p)
    # A checkpoint written before TrainResources still loads: its resource keys are dropped.
    old = {**CandidateConfig().to_dict(), "num_workers": 2, "use_gpu": False,
           "cpus_per_worker": 1.0, "gpus_per_worker": 1.0}
    assert CandidateConfig.from_dict(old, "trainer.json") == CandidateConfig()


def test_did_you_mean_names_the_closest_allowed_name_or_nothing() -> None:
    from san_search.errors import did_you_mean

    assert did_you_mean("epoch", ["epochs", "lr"]) == "; did you mean 'epochs'?"
    assert did_you_mean("zzz", ["epochs", "lr"]) == ""
    assert did_you_mean("resnet10", ["resnet10t", "resnet18", "vit"], n=3, cutoff=0.4) == (
        "; did you mean resnet10t, resnet18?")


def test_a_checkpoint_continues_only_its_own_candidate() -> None:
    import json

    from san_search.config import CandidateConfig
    from san_search.search.checkpoints import same_candidate

    cfg = CandidateConfig(width=8)
    saved = json.loads(json.dumps(cfg.to_dict()))  # as the state file holds it
    assert same_candidate(saved, cfg)
    assert not same_candidate(saved, CandidateConfig(width=16))
