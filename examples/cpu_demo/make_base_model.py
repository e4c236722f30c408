"""Write the demo's "base model": a randomly initialised HF OPT of opt-debug's shape.

No model hub is reachable here; on a real machine the base is e.g. facebook/opt-1.3b and this
step is `optiml-convert hf-to-megatron <hf dir> <out>` alone.
"""

import argparse

import torch
from transformers import OPTConfig, OPTForCausalLM

from megatron_optiml.conversion.opt_hf import hf_config_from_arch
from megatron_optiml.models.opt import get_flavor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--flavor", default="opt-debug")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    arch = get_flavor(args.flavor)
    torch.manual_seed(args.seed)
    config = hf_config_from_arch(arch, arch.vocab_size, torch.float32, base={"dropout": 0.1})
    model = OPTForCausalLM(OPTConfig(**config))
    model.save_pretrained(args.out_dir)
    print(f"base model ({args.flavor}, random init) -> {args.out_dir}")


if __name__ == "__main__":
    main()
