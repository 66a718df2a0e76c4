"""One intra-op thread for these tests.

The models and ops here are tiny, so a second OpenMP thread gains nothing, and on a shared
machine it costs a lot: when another process holds a core, every small op waits at an OpenMP
barrier (measured: this suite took 156 s with 2 threads under load, 10 s with 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
