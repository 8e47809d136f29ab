"""Fixtures of the evaluation tests: hand-made shards with known answers."""

from __future__ import annotations

import pytest

from tests.evaluate.handmade import Handmade, write_shards


@pytest.fixture(scope="session")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Handmade:
    return write_shards(tmp_path_factory.mktemp("handmade") / "shards")
