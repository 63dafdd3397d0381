"""Model registries: autoencoders, gender classifiers and face matchers (`create`,
`list_models`, `register`)."""

from san_search.models.registry import KINDS, UnknownModelError, create, list_models, register

__all__ = ["KINDS", "UnknownModelError", "create", "list_models", "register"]
