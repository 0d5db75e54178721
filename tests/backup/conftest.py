"""Fixtures every backup test gets: moto answers the pull-through cache rule calls the ECR
registry settings read (moto 5 lacks them; see ``test_backup_support``)."""

from __future__ import annotations

import pytest

from tests.backup.test_backup_support import enable_pull_through_cache_rules


@pytest.fixture(autouse=True, scope="session")
def _moto_pull_through_cache_rules() -> None:
    enable_pull_through_cache_rules()
