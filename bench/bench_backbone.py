"""CPU throughput and memory of the Mamba backbone vs a same-size Transformer (PyTorch SDPA).

For each preset (default ``tiny``, ``small``; Mamba-2 mixer, the CPU default) and length
L in 512, 2k, 8k, 16k, one fwd+bwd training step of batch 1 is timed, in a fresh subprocess
per cell so that peak RSS (``VmHWM``) belongs to that cell alone. Side by side, a pre-norm
Transformer with the same width and depth (causal ``F.scaled_dot_product_attention``, head
dim 64, 4x GELU MLP), twice: with SDPA's default CPU backend (a flash-style kernel, memory
linear in L) and forced to the math backend (the ``L x L`` scores materialised, as in eager
attention code). Printed: tokens/s, peak RSS (and its growth over the process baseline), the
Mamba/Transformer speed ratio, where attention runs out of memory, and how time and memory
per token change from the shortest to the longest length (1.0 = linear). Mamba-1 is added
with ``--mixers mamba2,mamba1``.

Memory cap (``--cap-gb``, default 16 GB; the machine has 24 GB shared with others): a
materialised-attention cell whose estimated score memory exceeds the cap is not started, and
the parent kills any cell whose RSS passes the cap; both are reported as OOM.

glibc returns every freed allocation above 32 MB to the OS, so at long L each step would
page-fault its large tensors back in (measured here: small preset at L=16k, 7.3 s per step of
which 5.6 s system time, against 3.9 s without). Children therefore run with
``MALLOC_MMAP_MAX_=0`` and a large ``MALLOC_TRIM_THRESHOLD_`` (freed memory is reused);
``--system-malloc`` measures without. The same two variables help CPU pretraining on long
sequences.

Timings move with other load on the machine: the script prints how much CPU other processes
used while it ran. On a shared 2-core machine, 2 intra-op threads can be far slower than 1
when other processes hold the cores (OpenMP threads wait on each other); ``--threads`` sets
it. Run from the repository root::

    python bench/bench_backbone.py                  # full table, about 3-5 minutes on 2 cores
    python bench/bench_backbone.py --quick          # L = 512 and 2k only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

LENGTHS = (512, 2048, 8192, 16384)


# ----------------------------------------------------------------------------- child: one cell


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def build_transformer(d_model: int, n_layers: int, vocab_size: int):
    """Pre-norm causal Transformer with the backbone's width and depth (SDPA attention)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = max(1, d_model // 64)
            self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
            self.proj = nn.Linear(d_model, d_model, bias=False)
            self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                     nn.Linear(4 * d_model, d_model))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, l, d = x.shape
            q, k, v = (self.qkv(self.norm1(x)).view(b, l, 3, self.heads, d // self.heads)
                       .permute(2, 0, 3, 1, 4))
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(attn.transpose(1, 2).reshape(b, l, d))
            return x + self.mlp(self.norm2(x))

    class Transformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, d_model)
            self.blocks = nn.ModuleList([Block() for _ in range(n_layers)])
            self.norm = nn.LayerNorm(d_model)

        def forward(self, batch: dict) -> torch.Tensor:
            x = self.embed(batch["input_ids"])
            for block in self.blocks:
                x = block(x)
            return self.norm(x)

    return Transformer()


def run_cell(args: argparse.Namespace) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ehrfm.model import BackboneConfig, MambaBackbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    is_transformer = args.model.startswith("transformer")
    config = BackboneConfig.preset(args.preset, mixer="mamba2" if is_transformer else args.model,
                                   vocab_size=args.vocab)
    if is_transformer:
        model = build_transformer(config.d_model, config.n_layers, config.vocab_size)
    else:
        model = MambaBackbone(config)
    model.train()
    b, l = args.batch, args.length
    batch = {
        "input_ids": torch.randint(1, config.vocab_size, (b, l)),
        "time_days": 19_000.0 + torch.rand(b, l, dtype=torch.float64).cumsum(1) * 0.1,
        "age_years": torch.full((b, l), 55.0),
        "visit_index": torch.arange(l).expand(b, l) // 50,
        "token_type": torch.full((b, l), 7),
    }
    params = sum(p.numel() for p in model.parameters())
    baseline_kb = _rss_kb("VmRSS")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        if args.model == "transformer-math":
            with sdpa_kernel([SDPBackend.MATH]):
                model(batch).float().square().mean().backward()
        else:
            model(batch).float().square().mean().backward()

    step()  # warm-up (allocator, first-call paths); its peak counts, it is the same size
    times: list[float] = []
    while len(times) < args.max_iters and (sum(times) < args.min_seconds or len(times) < 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    best = min(times)
    return {
        "tokens_per_s": b * l / best,
        "step_s": best,
        "iters": len(times),
        "peak_mb": _rss_kb("VmHWM") / 1024,
        "growth_mb": (_rss_kb("VmHWM") - baseline_kb) / 1024,
        "params": params,
    }


# ----------------------------------------------------------------------------- parent: the table


class OtherLoad:
    """CPU used by other processes on the machine while the bench runs (from /proc/stat)."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        with open("/proc/stat") as handle:
            ticks = [int(x) for x in handle.readline().split()[1:]]
        busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return busy, ours, time.perf_counter()

    def other_cores(self) -> float:
        """Average number of cores used by other processes since construction."""
        busy, ours, wall = (b - a for a, b in zip(self.start, self._now()))
        return max(0.0, busy - ours) / max(wall, 1e-9)

    def summary(self) -> str:
        busy, ours, wall = (b - a for a, b in zip(self.start, self._now()))
        other = max(0.0, busy - ours)
        cores = os.cpu_count() or 1
        return (
            f"other processes used {other:.0f} CPU-s during the {wall:.0f} s run "
            f"({100 * other / max(wall * cores, 1e-9):.0f}% of {cores} cores); "
            f"the bench used {ours:.0f} CPU-s"
        )


def measure(model: str, preset: str, length: int, args: argparse.Namespace) -> dict:
    """Run one cell in a child; kill it if its RSS passes the cap."""
    cmd = [
        sys.executable, __file__, "--child", "--model", model, "--preset", preset, "--length", str(length),
        "--batch", str(args.batch), "--threads", str(args.threads), "--vocab", str(args.vocab),
        "--min-seconds", str(args.min_seconds), "--max-iters", str(args.max_iters),
    ]  # fmt: skip
    if model == "transformer-math":
        from ehrfm.model import BackboneConfig

        cfg = BackboneConfig.preset(preset)
        # Scores, softmax output and its gradient: ~3 fp32 (b, heads, L, L) tensors per layer.
        estimate_gb = 3 * cfg.n_layers * args.batch * max(1, cfg.d_model // 64) * length**2 * 4 / 2**30
        if estimate_gb > args.cap_gb:
            return {"error": f"OOM (est. {estimate_gb:.0f} GB > {args.cap_gb:g} GB cap, not run)"}
    cap_kb = args.cap_gb * 1024 * 1024
    env = dict(os.environ)
    if not args.system_malloc:
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 40))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed_at = 0
    deadline = time.monotonic() + args.cell_timeout
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as handle:
                rss = next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0)
        except FileNotFoundError:
            break
        if rss > cap_kb:
            killed_at = rss
            proc.kill()
            break
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return {"error": f"timeout > {args.cell_timeout:.0f} s"}
        time.sleep(0.05)
    out, err = proc.communicate()
    if killed_at:
        return {"error": f"OOM (RSS > {args.cap_gb:g} GB cap)"}
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        if "memory" in last.lower() or proc.returncode in (-9, 137):
            return {"error": "OOM (allocation failed)"}
        return {"error": f"failed: {last[:120]}"}
    return json.loads(out.strip().splitlines()[-1])


def fmt_rate(cell: dict) -> str:
    return cell["error"] if "error" in cell else f"{cell['tokens_per_s']:,.0f}"


def fmt_mem(cell: dict) -> str:
    return "-" if "error" in cell else f"{cell['peak_mb']:,.0f} (+{cell['growth_mb']:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--mixers", default="mamba2", help="comma list of mamba2, mamba1")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--quick", action="store_true", help="lengths 512 and 2048 only")
    parser.add_argument("--no-transformer", action="store_true")
    parser.add_argument("--system-malloc", action="store_true", help="do not tune glibc malloc in the cells")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's default)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--cap-gb", type=float, default=16.0)
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time at least this long per cell")
    parser.add_argument("--max-iters", type=int, default=5)
    parser.add_argument("--cell-timeout", type=float, default=240.0)
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads is None:
        import torch

        args.threads = torch.get_num_threads()
    if args.child:
        print(json.dumps(run_cell(args)))
        return

    lengths = (512, 2048) if args.quick else tuple(int(x) for x in args.lengths.split(","))
    presets = args.presets.split(",")
    mixers = args.mixers.split(",")
    attention = [] if args.no_transformer else ["transformer", "transformer-math"]
    names = {"transformer": "SDPA default", "transformer-math": "SDPA math"}
    probe = OtherLoad()
    time.sleep(1.0)
    busy_cores = probe.other_cores()
    if busy_cores > 0.3:
        print(
            f"warning: other processes are using {busy_cores:.1f} cores right now; "
            f"with {args.threads} intra-op "
            "thread(s) timings can be several times slower than on a quiet machine"
            + (" (try --threads 1)" if args.threads > 1 else "")
        )
    load = OtherLoad()
    malloc = "system malloc" if args.system_malloc else "MALLOC_MMAP_MAX_=0"
    print(
        f"ehrfm backbone bench: batch {args.batch}, fwd+bwd, fp32, {args.threads} thread(s), "
        f"vocab {args.vocab}, "
        f"cap {args.cap_gb:g} GB, {malloc}"
    )
    print("cells: tokens/s (= batch * L / best step time) and peak RSS MB of the cell's process "
          "(growth over its baseline)\n")
    columns = ["preset", "L", *(f"{m} tok/s" for m in mixers), *(f"{m} peak MB" for m in mixers)]
    for name in attention:
        columns += [f"{names[name]} tok/s", f"{names[name]} peak MB"]
    if attention:
        columns.append(f"{mixers[0]} / SDPA default")
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    results: dict = {}
    params: dict = {}
    for preset in presets:
        for length in lengths:
            cells = {name: measure(name, preset, length, args) for name in [*mixers, *attention]}
            row = [preset, f"{length:,}"]
            row += [fmt_rate(cells[m]) for m in mixers] + [fmt_mem(cells[m]) for m in mixers]
            for name in attention:
                row += [fmt_rate(cells[name]), fmt_mem(cells[name])]
            if attention:
                first, trans = cells[mixers[0]], cells["transformer"]
                if "error" in first or "error" in trans:
                    row.append("-")
                else:
                    row.append(f"{first['tokens_per_s'] / trans['tokens_per_s']:.2f}x")
            for name, cell in cells.items():
                if "params" in cell:
                    params[(preset, name)] = cell["params"]
            results[(preset, length)] = cells
            print("| " + " | ".join(row) + " |", flush=True)
    print()
    for (preset, name), n in sorted(params.items()):
        print(f"params {preset:6s} {names.get(name, name):12s} {n / 1e6:7.2f} M")
    for preset in presets:
        for name in [*mixers, *attention]:
            ok = [(l, results[(preset, l)][name]) for l in lengths
                  if "error" not in results[(preset, l)][name]]
            for l in lengths:
                if "error" in results[(preset, l)][name]:
                    print(f"{preset:6s} {names.get(name, name):12s} L = {l:,}: "
                          f"{results[(preset, l)][name]['error']}")
            if len(ok) >= 2:
                (l0, c0), (l1, c1) = ok[0], ok[-1]
                tokens = l1 / l0
                time_ratio = c1["step_s"] / c0["step_s"]
                mem_ratio = c1["growth_mb"] / max(c0["growth_mb"], 1e-9)
                print(
                    f"scaling {preset:6s} {names.get(name, name):12s} L {l0:,} -> {l1:,} "
                    f"(x{tokens:.0f} tokens): step time x{time_ratio:.1f}, "
                    f"memory growth x{mem_ratio:.1f}; per token: time x{time_ratio / tokens:.2f}, "
                    f"memory x{mem_ratio / tokens:.2f}"
                )
    print("\n" + load.summary())


if __name__ == "__main__":
    main()
