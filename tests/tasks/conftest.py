"""One real Dask LocalCluster (2 single-threaded worker processes) for the whole session.

It depends on ``moto_s3`` so the workers inherit the S3 endpoint and test credentials
(worker processes copy the environment when they start).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def dask_address(moto_s3: dict[str, str]) -> Iterator[str]:
    """The scheduler address of the session's LocalCluster."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address
