"""GPU half of the parity tests: mamba-ssm / causal-conv1d kernels vs the PyTorch references.

Marked ``gpu``; skipped without CUDA, and per kernel when that kernel did not import (the
reason carries the import error). Run by ``bench/gpu_check.sh`` on a GPU machine. Ground truth
is our reference in float64 on the same GPU (itself checked against the naive loop on CPU).
Tolerances and the gradient rule are those of ``scan_parity`` (mamba-ssm's table).
"""

from __future__ import annotations

import pytest
import torch
from scan_parity import assert_parity, leaves, run

from ehrfm.ops import load_kernels, selective_scan, ssd_chunked
from ehrfm.ops.conv import causal_conv1d

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
LENGTHS = [pytest.param(127, id="L127"), pytest.param(2048, id="L2048")]


def kernel(name: str):
    k = load_kernels()
    fn = getattr(k, name)
    if fn is None:
        pytest.skip(f"{name} unavailable: {k.errors.get(name, k.errors)}")
    return fn


def _randn(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device="cuda", dtype=torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l", LENGTHS)
def test_selective_scan_kernel(dtype: torch.dtype, l: int) -> None:
    selective_scan_fn = kernel("selective_scan_fn")
    gen = torch.Generator(device="cuda").manual_seed(0)
    b, d, n = 2, 64, 16
    u, delta, z = _randn(b, d, l, gen=gen), _randn(b, d, l, gen=gen) * 0.5 - 1.0, _randn(b, d, l, gen=gen)
    A = -(torch.rand(d, n, generator=gen, device="cuda", dtype=torch.float64) * 2 + 0.3)
    B, C, D, bias = (_randn(b, n, l, gen=gen), _randn(b, n, l, gen=gen), _randn(d, gen=gen),
                     _randn(d, gen=gen) * 0.1)
    grad_out = _randn(b, d, l, gen=gen)
    # The kernel keeps A, D and delta_bias in float32 whatever the input dtype (as in mamba-ssm).
    low = leaves([u, delta, B, C, z], dtype) + leaves([A, D, bias], torch.float32)
    rounded = [t.detach().double() for t in low]
    ref = leaves(rounded, torch.float64)

    def call(fn, u, delta, B, C, z, A, D, bias):
        return fn(u, delta, A, B, C, D, z, bias, True)

    y, grads = run(lambda *a: call(selective_scan_fn, *a), low, grad_out)
    y_ref, grads_ref = run(lambda *a: call(lambda *x: selective_scan(*x), *a), ref,
                           grad_out.to(dtype).double())
    assert_parity(y, y_ref, dtype, "y")
    for name, g, g_ref in zip(["u", "delta", "B", "C", "z", "A", "D", "delta_bias"], grads, grads_ref):
        assert_parity(g, g_ref, dtype, f"d{name}", grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l", LENGTHS)
def test_ssd_kernel(dtype: torch.dtype, l: int) -> None:
    chunk_scan = kernel("mamba_chunk_scan_combined")
    gen = torch.Generator(device="cuda").manual_seed(0)
    b, h, p, g, n = 2, 8, 16, 2, 32
    x, B, C = _randn(b, l, h, p, gen=gen), _randn(b, l, g, n, gen=gen), _randn(b, l, g, n, gen=gen)
    dt = torch.rand(b, l, h, generator=gen, device="cuda", dtype=torch.float64) * 0.2
    A = -(torch.rand(h, generator=gen, device="cuda", dtype=torch.float64) * 2 + 0.3)
    D, init = _randn(h, gen=gen), _randn(b, h, p, n, gen=gen) * 0.1
    grad_out = _randn(b, l, h, p, gen=gen)
    low = leaves([x, B, C], dtype) + leaves([dt, A, D, init], torch.float32)
    ref = leaves([t.detach().double() for t in low], torch.float64)

    def kernel_call(x, B, C, dt, A, D, init):
        return chunk_scan(x, dt, A, B, C, 64, D=D, initial_states=init, return_final_states=True)

    def reference_call(x, B, C, dt, A, D, init):
        return ssd_chunked(x, dt, A, B, C, 64, D=D, initial_state=init, return_final_state=True)

    (y, state) = kernel_call(*[t.detach() for t in low])
    (y_ref, state_ref) = reference_call(*[t.detach() for t in ref])
    assert_parity(y, y_ref, dtype, "y")
    assert_parity(state, state_ref, torch.float32 if dtype == torch.float32 else dtype, "final state")
    y, grads = run(kernel_call, low, grad_out)
    _, grads_ref = run(reference_call, ref, grad_out.to(dtype).double())
    for name, g_, g_ref in zip(["x", "B", "C", "dt", "A", "D", "initial_state"], grads, grads_ref):
        assert_parity(g_, g_ref, dtype, f"d{name}", grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_conv1d_kernel(dtype: torch.dtype) -> None:
    kernel("causal_conv1d_fn")
    gen = torch.Generator(device="cuda").manual_seed(0)
    b, l, c, k = 2, 300, 64, 4
    x, w, bias = _randn(b, l, c, gen=gen), _randn(c, k, gen=gen) * 0.3, _randn(c, gen=gen)
    grad_out = _randn(b, l, c, gen=gen)
    low = leaves([x, w, bias], dtype)
    ref = leaves([t.detach().double() for t in low], torch.float64)
    y, grads = run(lambda *a: causal_conv1d(*a, activation="silu", use_kernel=True), low, grad_out)
    y_ref, grads_ref = run(lambda *a: causal_conv1d(*a, activation="silu", use_kernel=False), ref,
                           grad_out.to(dtype).double())
    assert_parity(y, y_ref, dtype, "y")
    for name, g_, g_ref in zip(["x", "weight", "bias"], grads, grads_ref):
        assert_parity(g_, g_ref, dtype, f"d{name}", grad=True)


@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_mixer_kernel_path_matches_reference_path(mixer: str) -> None:
    """The whole mixer (in_proj, conv, scan, gating) through kernels vs references, fwd + bwd."""
    from ehrfm.model import BackboneConfig
    from ehrfm.model.mixers import build_mixer

    needed = "selective_scan_fn" if mixer == "mamba1" else "mamba_chunk_scan_combined"
    kernel(needed)
    torch.manual_seed(0)
    cfg = BackboneConfig.preset("tiny", mixer=mixer)
    module = build_mixer(cfg).cuda()
    x = torch.randn(2, 333, cfg.d_model, device="cuda")
    mask = torch.ones(2, 333, dtype=torch.bool, device="cuda")
    mask[1, 300:] = False
    grad_out = torch.randn_like(x)

    def run_path(use_kernels: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        module.zero_grad()
        cfg.use_kernels = use_kernels
        module.conv.use_kernel = use_kernels
        inp = x.clone().requires_grad_()
        out, state = module(inp, mask, return_state=True)
        out.backward(grad_out)
        return out.detach(), state.ssm, [inp.grad] + [p.grad.clone() for p in module.parameters()]

    y_k, s_k, g_k = run_path(True)
    y_r, s_r, g_r = run_path(False)
    assert_parity(y_k, y_r, torch.float32, f"{mixer} output")
    assert_parity(s_k, s_r, torch.float32, f"{mixer} final state")
    for i, (a, b) in enumerate(zip(g_k, g_r)):
        assert_parity(a, b, torch.float32, f"{mixer} grad #{i}", grad=True)


def test_backbone_prefill_on_kernels_then_step() -> None:
    """Scoring flow on a GPU: kernel prefill of a history, then O(1) steps, equals a full pass."""
    from ehrfm.model import BackboneConfig, MambaBackbone

    kernel("mamba_chunk_scan_combined")
    torch.manual_seed(0)
    model = MambaBackbone(BackboneConfig.preset("tiny", vocab_size=60)).cuda().eval()
    b, l, extra = 2, 200, 5
    batch = {
        "input_ids": torch.randint(1, 60, (b, l + extra), device="cuda"),
        "time_days": 19000 + torch.rand(b, l + extra, device="cuda", dtype=torch.float64).cumsum(1),
        "age_years": torch.full((b, l + extra), 50.0, device="cuda"),
        "visit_index": torch.ones(b, l + extra, dtype=torch.long, device="cuda"),
        "token_type": torch.full((b, l + extra), 7, device="cuda"),
    }
    with torch.no_grad():
        full = model(batch)
        _, state = model({k: v[:, :l] for k, v in batch.items()}, return_state=True)
        for t in range(l, l + extra):
            h_t, state = model.step({k: v[:, t] for k, v in batch.items()}, state)
            assert_parity(h_t, full[:, t], torch.float32, f"step {t}")


@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_mixer_under_bf16_autocast(mixer: str) -> None:
    """Training on GPU runs under bf16 autocast: kernels must accept the mixed dtypes we pass."""
    from ehrfm.model import BackboneConfig
    from ehrfm.model.mixers import build_mixer

    kernel("selective_scan_fn" if mixer == "mamba1" else "mamba_chunk_scan_combined")
    torch.manual_seed(0)
    cfg = BackboneConfig.preset("tiny", mixer=mixer)
    module = build_mixer(cfg).cuda()
    x = torch.randn(2, 512, cfg.d_model, device="cuda")

    def run_path(use_kernels: bool) -> tuple[torch.Tensor, torch.Tensor]:
        module.zero_grad()
        cfg.use_kernels = use_kernels
        module.conv.use_kernel = use_kernels
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = module(x)
        out.float().square().mean().backward()
        return out.detach().float(), module.in_proj.weight.grad.clone()

    y_k, g_k = run_path(True)
    y_r, g_r = run_path(False)
    assert_parity(y_k, y_r, torch.bfloat16, f"{mixer} autocast output")
    assert_parity(g_k, g_r, torch.bfloat16, f"{mixer} autocast in_proj grad", grad=True)
