"""Peak memory and throughput of streamed conversion on a synthetic multi-GB OPT checkpoint.

Writes a random bf16 HF checkpoint (default: opt-1.3b's shape, ~2.6 GB, 1 GB shards) to a temp
folder, then runs HF -> Megatron and Megatron -> HF, each in a fresh process, and reports peak
RSS (and its anonymous / file-backed split) against the largest input shard, and GB/s.

    .venv/bin/python benchmarks/bench_conversion.py [--flavor opt-1.3b] [--shard-gb 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_sampler(peaks: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024
        for k, v in fields.items():
            peaks[k] = max(peaks.get(k, 0), v)
        time.sleep(0.02)


def _current_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_step(step: str, src: str, dst: str) -> None:
    """Child process: one conversion; prints a JSON line with its memory and time."""
    import torch  # noqa: F401 - imported before the baseline so it is not counted as conversion

    from megatron_optiml.conversion import convert

    # Sampled from /proc: ru_maxrss of an exec'd child keeps the parent's pre-exec peak.
    baseline = _current_rss()
    peaks: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(peaks, stop), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with convert.process_group():
        if step == "hf-to-megatron":
            convert.hf_to_megatron(src, dst)
        else:
            convert.megatron_to_hf(src, dst, max_shard_bytes=2**30)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    print(
        json.dumps(
            {
                "step": step,
                "seconds": seconds,
                "baseline_rss": baseline,
                "peak_rss": peaks["VmRSS"],
                "peak_children_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                "sampled": peaks,
            }
        )
    )


def make_synthetic_hf(out: Path, flavor: str, shard_bytes: int) -> int:
    """A random bf16 HF OPT folder written layer by layer; returns the largest shard's bytes."""
    import torch

    from megatron_optiml.conversion.opt_hf import (
        HFShardWriter,
        canonical_group_to_hf,
        canonical_groups,
        hf_config_from_arch,
        hf_tensor_plan,
    )
    from megatron_optiml.models.opt import get_flavor
    from megatron_optiml.models.opt.init import canonical_shapes

    arch = get_flavor(flavor)
    shapes = canonical_shapes(arch)
    plan = hf_tensor_plan(arch, arch.vocab_size, dict.fromkeys(shapes, torch.bfloat16))
    writer = HFShardWriter(out, plan, shard_bytes)
    g = torch.Generator().manual_seed(0)
    for group in canonical_groups(arch):
        tensors = {n: (torch.randn(shapes[n], generator=g) * 0.02).bfloat16() for n in group}
        writer.add(
            canonical_group_to_hf(
                tensors,
                arch,
                arch.vocab_size,
                torch.zeros(2, arch.hidden_size, dtype=torch.bfloat16),
            )
        )
    writer.close()
    config = hf_config_from_arch(arch, arch.vocab_size, torch.bfloat16)
    (out / "config.json").write_text(json.dumps(config))
    return max(f.stat().st_size for f in out.glob("*.safetensors"))


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--flavor", default="opt-1.3b")
    p.add_argument("--shard-gb", type=float, default=1.0)
    p.add_argument("--workdir", help="default: a temp folder, removed at the end")
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--dst", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        run_step(args.step, args.src, args.dst)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_conversion_"))
    try:
        t0 = time.perf_counter()
        largest = make_synthetic_hf(work / "hf", args.flavor, int(args.shard_gb * 2**30))
        total = _dir_bytes(work / "hf")
        print(
            f"synthetic {args.flavor} bf16: {total / 1e9:.2f} GB, largest shard "
            f"{largest / 1e9:.2f} GB (written in {time.perf_counter() - t0:.0f} s)"
        )
        for step, src, dst in (
            ("hf-to-megatron", work / "hf", work / "megatron"),
            ("megatron-to-hf", work / "megatron", work / "hf_back"),
        ):
            out = subprocess.run(
                [sys.executable, __file__, "--step", step, "--src", str(src), "--dst", str(dst)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            s = r["sampled"]
            print(
                f"{step}: {total / 1e9 / r['seconds']:.2f} GB/s ({r['seconds']:.1f} s); "
                f"peak RSS {r['peak_rss'] / 1e9:.2f} GB = {r['peak_rss'] / largest:.2f}x largest "
                f"shard (of which {r['baseline_rss'] / 1e9:.2f} GB after imports; sampled peak anon "
                f"{s.get('RssAnon', 0) / 1e9:.2f} GB, file-backed {s.get('RssFile', 0) / 1e9:.2f} GB; "
                f"writer children {r['peak_children_rss'] / 1e9:.2f} GB)"
            )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
