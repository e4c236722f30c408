"""`optiml-convert`: HF OPT / metaseq parts <-> Megatron-Core dist checkpoints (any TP/PP).

Runs as one process (it starts its own 1-rank gloo group for dist_checkpointing; no torchrun).
The Megatron checkpoint it writes is layout-free: the trainer loads it at any TP/PP.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _size(text: str) -> int:
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30}
    for suffix, mult in units.items():
        if text.upper().endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="optiml-convert", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, to_hf: bool):
        sp.add_argument("--dtype", choices=sorted(DTYPES), help="cast weights (default: keep)")
        if to_hf:
            sp.add_argument("--max-shard-size", type=_size, default=5 * 2**30, help="e.g. 5GB")
            sp.add_argument("--tokenizer-dir", help="vocab.json/merges.txt (default: bundled)")
        else:
            sp.add_argument(
                "--pad-vocab-to-multiple-of",
                type=int,
                default=1,
                help="pad the embedding rows (e.g. to divide by the TP size)",
            )

    sp = sub.add_parser("hf-to-megatron", help="HF OPT folder -> Megatron checkpoint root")
    sp.add_argument("hf_dir")
    sp.add_argument("out_root")
    common(sp, to_hf=False)

    sp = sub.add_parser("megatron-to-hf", help="Megatron checkpoint root -> HF OPT folder")
    sp.add_argument("root", help="checkpoint root (tracker picks the iteration) or iter folder")
    sp.add_argument("out_dir")
    sp.add_argument("--iteration", help="an iteration number or 'release'")
    common(sp, to_hf=True)

    for name, what in (("metaseq-to-megatron", "Megatron root"), ("metaseq-to-hf", "HF folder")):
        sp = sub.add_parser(name, help=f"metaseq *-model_part-N.pt files -> {what}")
        sp.add_argument("parts", nargs="+", help="all model parts, in part order")
        sp.add_argument("out")
        sp.add_argument("--num-attention-heads", type=int, help="if the parts carry no cfg")
        common(sp, to_hf=name.endswith("hf"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from megatron_optiml.conversion import convert
    from megatron_optiml.utils.disk import no_space_error, no_space_message, removed_on_failure

    dtype = DTYPES[args.dtype] if args.dtype else None
    target = {"hf-to-megatron": "out_root", "megatron-to-hf": "out_dir"}.get(args.command, "out")
    out_path = getattr(args, target)
    try:
        # A failed conversion (bad input, full disk) leaves no half-written output behind.
        with convert.process_group(), removed_on_failure(out_path):
            if args.command == "hf-to-megatron":
                out = convert.hf_to_megatron(
                    args.hf_dir,
                    args.out_root,
                    pad_vocab_to_multiple_of=args.pad_vocab_to_multiple_of,
                    dtype=dtype,
                )
            elif args.command == "megatron-to-hf":
                it = args.iteration
                out = convert.megatron_to_hf(
                    args.root,
                    args.out_dir,
                    iteration=None if it is None else (it if it == "release" else int(it)),
                    dtype=dtype,
                    max_shard_bytes=args.max_shard_size,
                    tokenizer_dir=args.tokenizer_dir,
                )
            elif args.command == "metaseq-to-megatron":
                out = convert.metaseq_to_megatron(
                    args.parts,
                    args.out,
                    num_attention_heads=args.num_attention_heads,
                    pad_vocab_to_multiple_of=args.pad_vocab_to_multiple_of,
                    dtype=dtype,
                )
            else:
                out = convert.metaseq_to_hf(
                    args.parts,
                    args.out,
                    num_attention_heads=args.num_attention_heads,
                    dtype=dtype,
                    max_shard_bytes=args.max_shard_size,
                    tokenizer_dir=args.tokenizer_dir,
                )
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, NotImplementedError) as e:
        sys.stderr.write(f"optiml-convert: error: {e}\n")
        return 2
    except BaseException as e:
        # A full disk, also when dist_checkpointing wraps it (CheckpointException, a
        # BaseException); other
        # OSErrors (permissions, ...) name their path already.
        full = no_space_error(e)
        if full is None and not isinstance(e, OSError):
            raise
        message = no_space_message(full, out_path) if full else str(e)
        sys.stderr.write(f"optiml-convert: error: {message}\n")
        return 1
    sys.stdout.write(f"{out}\n")
    return 0
