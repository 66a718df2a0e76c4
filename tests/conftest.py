"""Shared fixtures: where the real data is (../shared/data beside the checkout)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}: the checkout must sit beside shared/")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthea_meds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 615-patient Synthea FHIR set as a MEDS dataset, ingested once per test session.

    Shared by the tokenizer's and the tasks' real-data tests (about 20 s to build).
    """
    from ehrfm.ingest import ingest_fhir

    out = tmp_path_factory.mktemp("synthea") / "meds"
    ingest_fhir(inputs=[str(shared_data / "synthea-r4")], output=out, workers=2)
    return out


# Tiny models and ops gain nothing from a second OpenMP thread, and on a shared machine it costs
# a lot: when another process holds a core every small op waits at an OpenMP barrier
# (measured: tests/model took 156 s with 2 threads under load, 10 s with 1).
_SINGLE_THREAD_FOLDERS = ("ops", "model", "finetune", "predict")


@pytest.fixture(autouse=True)
def _single_torch_thread_for_small_models(request: pytest.FixtureRequest) -> Iterator[None]:
    if Path(request.node.path).parent.name not in _SINGLE_THREAD_FOLDERS:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
