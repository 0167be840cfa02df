"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest


def _class_names(obj, found: set) -> set:
    if isinstance(obj, dict):
        if "class_name" in obj:
            found.add(obj["class_name"])
        for v in obj.values():
            _class_names(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _class_names(v, found)
    return found


@pytest.fixture(scope="session")
def class_names():
    """``class_names(config) -> set``: every ``class_name`` in a serialized Keras config, at any depth."""
    return lambda config: _class_names(config, set())
