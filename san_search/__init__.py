"""san-search: find, select and ship Semi-Adversarial Network ensembles."""

__version__ = "0.2.0"
