"""From ``model.data`` to what the training loop reads: the packed train set and one validation
set per benchmark, DP-sharded resumable loaders, and micro-batch iterators on the compute
device (one stream per model chunk for interleaved schedules)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import tee
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from megatron_optiml.data.blend import blend_per_split, load_blend
from megatron_optiml.data.collate import collate_packed
from megatron_optiml.data.config import PackedInstructionDatasetConfig
from megatron_optiml.data.packed import build_packed_datasets
from megatron_optiml.data.sampler import PackedBatchSampler

if TYPE_CHECKING:
    from megatron_optiml.config import DataConfig


def _dataset_config(data: DataConfig, seed: int, per_split) -> PackedInstructionDatasetConfig:
    cache = data.path_to_cache or str(Path(data.blend_path).resolve().parent / "cache")
    return PackedInstructionDatasetConfig(
        random_seed=seed,
        sequence_length=data.seq_length,
        blend_per_split=per_split,
        path_to_cache=cache,
        tokenizer=None,
        mid_level_dataset_surplus=0.005,
    )


def build_train_dataset(data: DataConfig, *, seed: int, num_samples: int):
    """The packed, blended train split of ``data.blend_path`` with ``num_samples`` packs."""
    blends = load_blend(data.blend_path)
    if "train" not in blends:
        raise ValueError(f"{data.blend_path}: no 'train' split")
    per_split = blend_per_split({"train": blends["train"]})
    return build_packed_datasets(_dataset_config(data, seed, per_split), [num_samples, None, None])[
        0
    ]


def build_validation_datasets(data: DataConfig, *, seed: int) -> dict[str, Any]:
    """One packed dataset per benchmark of ``data.validation_split`` (prefix basenames are
    ``<benchmark>__<task>``, see docs/architecture.md); empty when the blend has no such split."""
    blends = load_blend(data.blend_path)
    if data.validation_split not in blends:
        return {}
    groups: dict[str, list[str]] = defaultdict(list)
    for prefix in blends[data.validation_split][0]:
        groups[Path(prefix).name.split("__", 1)[0]].append(prefix)
    out = {}
    for bench, prefixes in sorted(groups.items()):
        per = blend_per_split({"validation": (prefixes, [1.0] * len(prefixes))})
        out[bench] = build_packed_datasets(_dataset_config(data, seed, per), [None, None, None])[1]
    return out


def make_loader(
    dataset,
    *,
    consumed: int,
    total: int,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    attention: str,
    num_workers: int,
    seed: int,
) -> torch.utils.data.DataLoader:
    """This DP rank's micro-batches of ``dataset`` from sample ``consumed`` on (Megatron-LM's
    sampler order), collated for ``attention`` ('local': block-diagonal mask, 'thd': TE)."""
    sampler = PackedBatchSampler(
        total_samples=total,
        consumed_samples=consumed,
        micro_batch_size=micro_batch_size,
        data_parallel_rank=data_parallel_rank,
        data_parallel_size=data_parallel_size,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=partial(collate_packed, attention=attention),
        num_workers=num_workers,
        # Its own generator: DataLoader draws a base seed per iterator, which would otherwise
        # consume the global RNG (dropout's stream) and break exact resume.
        generator=torch.Generator().manual_seed(seed),
    )


def micro_batch_iterator(
    loader: Iterable[dict], *, num_chunks: int, device: torch.device
) -> Iterator[dict] | list[Iterator[dict]]:
    """The loader's micro-batches on ``device``; with several model chunks (interleaved
    schedules pull micro-batches per chunk, each needs the same sequence) one copy per chunk."""
    it = iter(loader) if device.type == "cpu" else map(partial(to_device, device=device), loader)
    if num_chunks == 1:
        return it
    return list(tee(it, num_chunks))


class ZeroLossPadded(torch.utils.data.Dataset):
    """``dataset`` extended to ``length`` samples with copies whose loss mask is all zero (the
    last DP chunk of a small validation set is filled without counting twice)."""

    def __init__(self, dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if i < len(self.dataset):
            return self.dataset[i]
        sample = dict(self.dataset[i % len(self.dataset)])
        sample["loss_mask"] = sample["loss_mask"] * 0
        return sample


def to_device(batch: dict, device: torch.device) -> dict:
    """A collated micro-batch (tensors and THD ``PackedSeqParams``) moved to ``device``."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif v is not None and dataclasses.is_dataclass(v):
            out[k] = dataclasses.replace(
                v,
                **{
                    f.name: getattr(v, f.name).to(device, non_blocking=True)
                    for f in dataclasses.fields(v)
                    if isinstance(getattr(v, f.name), torch.Tensor)
                },
            )
        else:
            out[k] = v
    return out
