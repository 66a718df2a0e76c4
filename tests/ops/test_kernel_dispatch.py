"""The kernel switch on a machine without CUDA: nothing is imported, references are used."""

from __future__ import annotations

import sys

import pytest
import torch

from ehrfm.ops import kernels, kernels_for, load_kernels


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_no_cuda_means_no_mamba_ssm_import() -> None:
    load_kernels.cache_clear()
    k = load_kernels()
    assert k.available() == ()
    assert "mamba_ssm" not in sys.modules and "causal_conv1d" not in sys.modules
    assert kernels_for(torch.zeros(1)) is None


def test_cpu_tensors_never_get_kernels() -> None:
    assert kernels_for(torch.zeros(3)) is None


def test_disable_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    load_kernels.cache_clear()
    try:
        assert load_kernels().available() == ()
    finally:
        load_kernels.cache_clear()


def test_failed_imports_are_caught_and_logged_once(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """What a CUDA machine with a broken mamba-ssm install sees: a fallback, one warning."""

    def broken() -> None:
        raise OSError("libcudart.so: cannot open shared object file")

    def no_triton() -> None:
        raise RuntimeError("0 active drivers ([]). There should only be one.")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernels, "_import_selective_scan", broken)
    monkeypatch.setattr(kernels, "_import_chunk_scan", no_triton)
    monkeypatch.setattr(kernels, "_import_causal_conv1d",
                        lambda: (_ for _ in ()).throw(ImportError("No module named 'causal_conv1d'")))
    load_kernels.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="ehrfm.ops.kernels"):
            first = load_kernels()
            second = load_kernels()
        assert first is second and first.available() == ()
        assert set(first.errors) == {"selective_scan_fn", "mamba_chunk_scan_combined", "causal_conv1d_fn"}
        assert len([r for r in caplog.records if r.name == "ehrfm.ops.kernels"]) == 1
    finally:
        load_kernels.cache_clear()
