"""The model registry: what is registered, unknown names answered with close matches, and the
registry importing no model family."""

from __future__ import annotations

import pytest

from san_search.models import UnknownModelError, create, list_models


def test_registries_are_full() -> None:
    assert {"san_paper", "san_conv"} <= set(list_models("autoencoder"))
    assert len(list_models("gender")) >= 5 and "paper_cnn" in list_models("gender")
    assert len(list_models("matcher")) >= 3


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown gender model 'resnet10'; did you mean "
                                                r"resnet10t, "):
        create("gender", "resnet10")
    with pytest.raises(UnknownModelError, match="unknown model kind 'vae'"):
        list_models("vae")


def test_registry_imports_no_model_family() -> None:
    """The families import the registry (to register); the registry never imports them back,
    and `san_search.models` is what loads every family."""
    import ast
    from pathlib import Path

    import san_search.models
    from san_search.models import registry

    def imported(module: object) -> set[str]:
        tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text())
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {f"{n.module}.{a.name}" for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) for a in n.names}
        return names

    families = {"san_search.models.autoencoders", "san_search.models.gender",
                "san_search.models.matchers"}
    assert not imported(registry) & families
    assert families <= imported(san_search.models)
    assert {"paper_cnn", "resnet10t"} <= set(list_models("gender"))
    assert "san_conv" in list_models("autoencoder") and "resnet10t" in list_models("matcher")
