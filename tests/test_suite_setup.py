"""The test session has one Airflow home: the in-process Airflow (``dag.test()``) and the
``airflow db migrate`` subprocess of the ``airflow_db`` fixture must use the same SQLite file.

The root conftest was once imported twice (as ``conftest`` and as ``tests.conftest``), which
made a second temp home after Airflow had read the first; every ``dag.test()`` then failed with
``no such table``. The ``__init__.py`` files make both names one module.
"""

from __future__ import annotations

import os
import sys


def test_the_conftest_is_one_module_and_airflow_uses_its_home():
    import tests.conftest as shared

    assert os.environ["AIRFLOW_HOME"] == shared._HOME
    loaded = [m for name, m in sys.modules.items() if name.endswith("conftest") and getattr(m, "_HOME", None)]
    assert {m._HOME for m in loaded} == {shared._HOME}, [m.__name__ for m in loaded]
    from airflow import settings

    assert shared._HOME in str(settings.SQL_ALCHEMY_CONN)
