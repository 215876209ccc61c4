"""One private local Ray (2 CPUs) per test module that asks for it: it takes seconds to start.

Started through :func:`mastery.ops.ray_runtime.init_ray`, the way the commands start theirs, so the tests
run under the same settings (loopback only, token, private temporary folder). The commands under test
find it running and use it (``ray_session`` leaves a running session alone).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mastery.ops.ray_runtime import init_ray

    with pytest.MonkeyPatch.context() as mp:
        # Ray's workers inherit this process's environment when Ray starts, before the per-test private
        # cache of conftest.py is set: give them that same cache now.
        mp.setenv("MASTERY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        ray = init_ray(num_cpus=2)
        try:
            yield ray
        finally:
            ray.shutdown()
