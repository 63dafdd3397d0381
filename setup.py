"""The package list, the one build setting pyproject.toml cannot say: every `san_search*`
package found in the tree, plus `san_search.search_spaces`, which maps to the top-level
`search_spaces/` folder (it stays there; the wheel carries it inside the package). Package
data and everything else are in pyproject.toml."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["san_search", "san_search.*"],
                                 exclude=["*.__pycache__"]),
        "san_search.search_spaces",
    ],
    package_dir={"san_search.search_spaces": "search_spaces"},
)
