"""GPU throughput table: mamba-ssm kernels vs the PyTorch reference, tokens/s and peak memory.

Runs one fwd+bwd training step of ``MambaBackbone`` (default preset ``small``, batch 2, bf16
autocast as GPU training does) per cell, for each mixer (Mamba-2, Mamba-1), length (2k, 8k,
16k) and path: ``kernel`` (mamba-ssm / causal-conv1d where they imported) and ``reference``
(``use_kernels=False``: the same model through ``ehrfm.ops``). Peak memory is
``torch.cuda.max_memory_allocated`` for the cell. Called by ``bench/gpu_check.sh``; on its own::

    python bench/gpu_check.py --preset small --batch 2 --lengths 2048,8192,16384

Cells that run out of GPU memory print ``OOM``; cells left when ``--budget-s`` is spent print
``skipped (budget)`` so the whole check stays inside its time limit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ehrfm.model import BackboneConfig, MambaBackbone  # noqa: E402
from ehrfm.ops import load_kernels  # noqa: E402


def make_batch(b: int, l: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(1, vocab, (b, l), device=device),
        "time_days": 19_000.0 + torch.rand(b, l, dtype=torch.float64, device=device).cumsum(1) * 0.1,
        "age_years": torch.full((b, l), 55.0, device=device),
        "visit_index": torch.arange(l, device=device).expand(b, l) // 50,
        "token_type": torch.full((b, l), 7, device=device),
    }


def run_cell(mixer: str, path: str, length: int, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    config = BackboneConfig.preset(args.preset, mixer=mixer, vocab_size=args.vocab,
                                   use_kernels=(path == "kernel"))
    model = MambaBackbone(config).to(device).train()
    batch = make_batch(args.batch, length, args.vocab, device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]

    def step() -> None:
        model.zero_grad(set_to_none=True)  # noqa: F821  (a closure cell: `del model` below frees it)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            hidden = model(batch)  # noqa: F821
        hidden.float().square().mean().backward()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        step()  # warm-up: Triton autotuning and compilation happen here
        sync()
        times = []
        while len(times) < args.iters:
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
            if sum(times) > args.cell_seconds:
                break
    except torch.cuda.OutOfMemoryError:
        return {"error": "OOM"}
    finally:
        del model
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"tokens_per_s": args.batch * length / min(times), "peak_gb": peak, "iters": len(times)}


def rate(cell: dict) -> str:
    return cell["error"] if "error" in cell else f"{cell['tokens_per_s']:,.0f}"


def mem(cell: dict) -> str:
    return "-" if "error" in cell else f"{cell['peak_gb']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--mixers", default="mamba2,mamba1")
    parser.add_argument("--lengths", default="2048,8192,16384")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--cell-seconds", type=float, default=20.0, help="stop timing a cell after this long")
    parser.add_argument("--budget-s", type=float, default=180.0,
                        help="skip the remaining cells after this long")
    parser.add_argument("--device", default="cuda", help="'cpu' only to smoke-test this script")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check.py: CUDA is not available")
    kernels = load_kernels()
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"kernels imported: {', '.join(kernels.available()) or 'none'}")
    for name, why in kernels.errors.items():
        print(f"  not available: {name}: {why}")
    print(f"preset {args.preset}, batch {args.batch}, {args.dtype} autocast, fwd+bwd, "
          f"best of up to {args.iters} steps\n")
    print("| mixer | L | kernel tok/s | reference tok/s | speedup | kernel peak GB | reference peak GB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    started = time.monotonic()
    for mixer in args.mixers.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            cells = {}
            for path in ("kernel", "reference"):
                if time.monotonic() - started > args.budget_s:
                    cells[path] = {"error": "skipped (budget)"}
                else:
                    cells[path] = run_cell(mixer, path, length, args)
            k, r = cells["kernel"], cells["reference"]
            speedup = "-" if "error" in k or "error" in r else f"{k['tokens_per_s'] / r['tokens_per_s']:.1f}x"
            print(f"| {mixer} | {length:,} | {rate(k)} | {rate(r)} | {speedup} | {mem(k)} | {mem(r)} |",
                  flush=True)
    print("\nnote: for Mamba-1 the kernel path needs mamba-ssm's compiled selective_scan_cuda; without it "
          "both columns run the reference (see 'kernels imported').")


if __name__ == "__main__":
    main()
