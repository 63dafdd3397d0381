"""search.driver: what is refused before any trial, and the command line's overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from san_search.search import load_search_space
from san_search.zoo.store import open_zoo
from tests.search.spaces import SMOKE, write_space


def test_a_custom_resource_no_node_offers_is_refused_before_any_trial(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.search import SearchError, check_trial_fits

    _, zoo_dir = problem
    text = SMOKE.replace("max_failures: 1}", "max_failures: 1, custom: {trial_slot: 1}}")
    space = load_search_space(write_space(tmp_path, text)).bind(open_zoo(zoo_dir), 16)
    with pytest.raises(SearchError, match=r"a trial needs 1 'trial_slot'; the Ray cluster has 0"):
        check_trial_fits(space, {"CPU": 2.0})
    check_trial_fits(space, {"CPU": 2.0, "trial_slot": 2.0})  # fits


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_an_interrupt_before_the_search_starts_leaves_nothing_and_says_start_again(
        problem: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by bench/chaos.py: SIGTERM while the baselines were scored removed the folder,
    marked the parent FAILED and left `--resume` answering 'no search to resume'; a SIGTERM
    just before (logging the parent's params) left the parent RUNNING for good."""
    from mlflow.tracking import MlflowClient

    from san_search.search import driver
    from san_search.search.record import SearchRecord

    def interrupted(record: SearchRecord) -> dict[str, float]:
        raise KeyboardInterrupt("SIGTERM")  # the signal, as the CLI raises it

    monkeypatch.setattr(driver, "_score_baselines", interrupted)
    data, zoo = problem
    space = write_space(tmp_path, SMOKE)
    client = MlflowClient(_sqlite(tmp_path))
    exp = client.create_experiment("early")
    parent = client.create_run(exp).info.run_id
    folder = tmp_path / "runs" / "s"
    record = SearchRecord("s", str(folder), str(space), str(data), str(zoo), "fp",
                          _sqlite(tmp_path), "early", exp, parent, {}, "now", str(folder))
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt), driver._before_start(client, parent, "s",
                                                                said.append):
        driver._create_folder(record, space, client)
    assert not folder.exists()
    run = client.get_run(parent)
    assert run.info.status == "KILLED"
    assert run.data.tags["resume"].startswith("interrupted before the search started: "
                                              "nothing to resume; run the same")
    assert said == [run.data.tags["resume"]]


@pytest.mark.slow
def test_resume_starts_a_search_killed_before_tune_saved_anything(
        problem: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the search folder was made, before Tune's first state: `--resume` runs the
    search from the start (it said 'start it again under a new name' and changed nothing)."""
    from mlflow.tracking import MlflowClient

    from san_search.search import driver

    data, zoo = problem
    space = write_space(tmp_path, SMOKE)
    real_run = driver._run

    def killed(*args: object, **kwargs: object) -> dict[str, object]:
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(driver, "_run", killed)
    with pytest.raises(KeyboardInterrupt):
        driver.start(space, data, zoo, out=tmp_path / "runs", name="s",
                     tracking_uri=_sqlite(tmp_path), log=lambda _: None)
    assert (tmp_path / "runs" / "s" / "search.json").is_file()
    assert not (tmp_path / "runs" / "s" / "tune").exists()
    monkeypatch.setattr(driver, "_run", real_run)
    said: list[str] = []
    summary = driver.resume("s", out=tmp_path / "runs", log=said.append)
    assert said[0] == f"no trial had started: starting search s in {tmp_path / 'runs' / 's'}"
    assert len(summary["rows"]) == load_search_space(space).budget.trials
    client = MlflowClient(_sqlite(tmp_path))
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
