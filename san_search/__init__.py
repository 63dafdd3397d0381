"""san-search: find, select and ship Semi-Adversarial Network ensembles."""

__version__ = "0.1.0"
