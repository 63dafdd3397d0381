"""search.driver: what is refused before any trial, and the command line's overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from san_search.search import load_search_space
from san_search.zoo import open_zoo
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
