"""Fixtures for the project's tests (the helpers live in driver_helpers.py)."""

from driver_helpers import make_series, patched_tree, reference_repo, reference_repo_template

__all__ = ["make_series", "patched_tree", "reference_repo", "reference_repo_template"]
