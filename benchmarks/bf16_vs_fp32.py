"""bf16 autocast vs float32: training step times on this CPU, side by side, and what precision.py chooses.

Three training steps shaped like the labs that use bf16: L9's CIFAR CNN (batch 128 of 32x32, channels_last),
L14's character LSTM (2 x 384 hidden, batch 64 x 128 characters) and L16/L20's MiniLM-sized transformer
(a random-init BERT of all-MiniLM-L6-v2's shape: 6 layers, 384 hidden, 12 heads; batch 16 x 160 word pieces,
one cross-encoder step of L20's full preset). Nothing is downloaded.

Each measurement runs in its own subprocess with a time limit, so a step that crashes (oneDNN has no
emulated bf16 LSTM) or crawls (emulated bf16 matmuls) is reported as such instead of hanging the run.
``--avx2`` adds a second column as on an AVX2-only CPU (an AMD EPYC without AVX-512 BF16, say):
``ONEDNN_MAX_CPU_ISA=AVX2`` limits oneDNN (convolutions, LSTMs, bf16 matmuls), ``MKL_ENABLE_INSTRUCTIONS=AVX2``
MKL (float32 matmuls) and ``ATEN_CPU_CAPABILITY=avx2`` torch's own kernels. Caveat: torch still routes bf16
matmuls to oneDNN there (it checks the real CPU), so the emulated bf16 penalty comes out larger than on a
real AVX2 CPU (about 15x on L20's cross-encoder there); the float32 times are the representative ones.

Usage: python benchmarks/bf16_vs_fp32.py [--steps 3] [--threads 0] [--timeout 30] [--avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

MODELS = ("cnn", "lstm", "transformer")
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


# -- one measurement (runs in a worker process) ----------------------------------------------------------
def _step_fn(model_name: str, bf16: bool) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    if model_name == "cnn":
        from mastery.vision.cnn import CifarCNN

        model = CifarCNN((32, 64, 128, 256), bf16=bf16, channels_last=True)
        x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

        def forward():
            return torch.nn.functional.cross_entropy(model(x), y)
    elif model_name == "lstm":
        from mastery.text.charlm import CharRNN

        model = CharRNN(65, kind="lstm", embed=64, hidden=384, num_layers=2, dropout=0.2)
        x, y = torch.randint(0, 65, (64, 128)), torch.randint(0, 65, (64, 128))

        def forward():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits, _ = model(x)  # (B, T, V)
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    elif model_name == "transformer":
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536, max_position_embeddings=512, num_labels=1)
        model = BertForSequenceClassification(config)
        ids, mask = torch.randint(1000, 30000, (16, 160)), torch.ones(16, 160, dtype=torch.long)

        def forward():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (16, 1)
            return torch.nn.functional.cross_entropy(logits.reshape(2, 8), torch.zeros(2, dtype=torch.long))
    else:
        raise SystemExit(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def worker(model_name: str, dtype: str, steps: int, budget: float) -> dict:
    """Seconds per training step: one warm-up step, then up to ``steps`` (fewer if ``budget`` runs out)."""
    step = _step_fn(model_name, dtype == "bf16")
    start = time.perf_counter()
    step()  # warm-up: allocations, oneDNN kernel selection
    warmup = time.perf_counter() - start
    times: list[float] = []
    while len(times) < steps and (not times or sum(times) + warmup < budget):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds_per_step": round(min(times), 4), "timed_steps": len(times), "warmup_s": round(warmup, 3)}


def precision_choice() -> dict:
    from mastery.core.precision import decide_bf16, torch_cpu_capability

    choice = decide_bf16("auto", "cpu")
    return {"bf16": choice.bf16, "reason": choice.reason, "torch_cpu_capability": torch_cpu_capability()}


# -- the driver -----------------------------------------------------------------------------------------
def _run(args: list[str], env: dict[str, str], timeout: float) -> dict:
    try:
        done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s (killed)"}
    if done.returncode != 0:
        last = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": (last[-1] if last else f"exit {done.returncode}")[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def column(env: dict[str, str], steps: int, timeout: float) -> dict:
    out: dict = {"precision_auto": _run(["--choice"], env, timeout)}
    for model_name in MODELS:
        row = {}
        for dtype in ("float32", "bf16"):
            row[dtype] = _run(["--worker", model_name, dtype, "--steps", str(steps),
                               "--budget", str(timeout / 3)], env, timeout)
        f32, b16 = row["float32"].get("seconds_per_step"), row["bf16"].get("seconds_per_step")
        if f32 and b16:
            row["bf16_speedup"] = round(f32 / b16, 2)  # > 1: bf16 is faster
        out[model_name] = row
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per measurement (best is kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before one measurement is killed")
    parser.add_argument("--avx2", action="store_true", help="add a column limited to AVX2 (oneDNN, MKL, ATen)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=20.0, help=argparse.SUPPRESS)
    parser.add_argument("--choice", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker or args.choice:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        result = precision_choice() if args.choice else worker(*args.worker, args.steps, args.budget)
        print(json.dumps(result))
        return

    from mastery.core.precision import cpu_flags

    env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    flags = cpu_flags()
    result = {
        "cpu": _cpu_name(), "cores": os.cpu_count(),
        "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"}),
        "steps": args.steps, "threads": args.threads or "torch default",
        "columns": {"this_cpu": column(env, args.steps, args.timeout)},
    }
    if args.avx2:
        result["columns"]["avx2_only"] = column({**env, **AVX2_ENV}, args.steps, args.timeout)
        result["columns"]["avx2_only"]["env"] = AVX2_ENV
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
