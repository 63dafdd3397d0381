"""Model registries: autoencoders, gender classifiers and face matchers (`create`,
`list_models`, `register`, `builder`).

Importing this package imports every model family, and each family registers its builders
with `registry` as it is imported; the registry itself imports no family (no import loop).
"""

from san_search.models import (  # noqa: F401  (they register)
    autoencoders,
    gender,
    matchers,
    pretrained,
)
from san_search.models.registry import (
    KINDS,
    UnknownModelError,
    builder,
    create,
    list_models,
    register,
)

__all__ = ["KINDS", "UnknownModelError", "builder", "create", "list_models", "register"]
