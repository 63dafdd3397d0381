"""The option helpers shared by several commands."""

from __future__ import annotations

import argparse

import pytest

from san_search.cli.options import add_build_options, add_tracking_options, split_fractions


def test_split_fractions_reads_three_numbers() -> None:
    assert split_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.2", "a,b,c", "0.5,0.25,0.25,0"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected three numbers"):
            split_fractions(bad)


def test_shared_options_parse_the_same_on_every_command() -> None:
    p = argparse.ArgumentParser()
    add_build_options(p)
    add_tracking_options(p, "exp")
    args = p.parse_args(["--splits", "0.6,0.2,0.2", "--pairs", "10", "--experiment", "e2"])
    assert (args.seed, args.splits, args.pairs, args.overwrite) == (0, (0.6, 0.2, 0.2), 10, False)
    assert (args.tracking_uri, args.experiment) == (None, "e2")
    assert p.parse_args([]).experiment == "exp"
