"""syncapp.registry: finding a synced model's spec by its label."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from syncapp import registry
from tests.testapp.models import Board


@pytest.fixture(autouse=True)
def _fresh_specs() -> Iterator[None]:
    registry.clear()
    yield
    registry.clear()


def test_a_label_finds_its_models_spec_and_keeps_finding_the_same():
    spec = registry.by_label("testapp.board")
    assert spec is registry.spec_for(Board)
    assert registry.by_label("testapp.board") is spec


@pytest.mark.parametrize(
    "label",
    [
        "testapp.nosuchmodel",
        "nosuchapp.board",
        "not-a-label",
        "",
        "testapp.Board",  # labels are lower case
        "auth.user",  # a model, not a synced one
    ],
)
def test_a_label_that_names_no_synced_model_finds_nothing_and_is_not_remembered(label):
    remembered = len(registry._by_label)
    for _ in range(3):
        assert registry.by_label(label) is None
    assert len(registry._by_label) == remembered


def test_clearing_the_registry_forgets_what_labels_found():
    before = registry.by_label("testapp.board")
    registry.clear()
    after = registry.by_label("testapp.board")
    assert after is not None
    assert after is not before
    assert after.model is Board
