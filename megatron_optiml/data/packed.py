"""Packed sequences over Megatron-Core's blended example stream, and the train/valid/test build.

``BlendedMegatronDatasetBuilder`` builds one ``InstructionExampleDataset`` per task and mixes them
with ``BlendedDataset`` (Megatron's own cached blending indices); ``PackedInstructionDataset``
then packs consecutive windows of that example stream into sequences. Packing across tasks, after
blending, is what metaseq did (it packed the mixed stream) and keeps the fill high when a task's
examples are all long; document masking makes the neighbours invisible to each other anyway.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_optiml.data.config import PackedInstructionDatasetConfig
from megatron_optiml.data.examples import InstructionExampleDataset
from megatron_optiml.data.indexed import example_lengths
from megatron_optiml.data.packing import pack_examples

logger = logging.getLogger(__name__)

ExampleStream = BlendedDataset | InstructionExampleDataset


def stream_lengths(examples: ExampleStream) -> np.ndarray:
    """Packed length of every sample of the example stream, without reading tokens."""
    if isinstance(examples, InstructionExampleDataset):
        return examples.sample_lengths()
    # One gather over the concatenated per-dataset lengths: O(samples), whatever the task count.
    per_dataset = [ds.sample_lengths() for ds in examples.datasets]
    starts = np.zeros(len(per_dataset), dtype=np.int64)
    np.cumsum([x.size for x in per_dataset[:-1]], out=starts[1:])
    flat = np.concatenate(per_dataset)
    dataset_index = np.asarray(examples.dataset_index, dtype=np.int64)
    return flat[starts[dataset_index] + np.asarray(examples.dataset_sample_index)]


class PackedInstructionDataset(torch.utils.data.Dataset):
    """Sample ``p`` is one sequence of ``sequence_length`` tokens filled with whole examples.

    Keys (numpy, length ``s = sequence_length`` unless noted):

    - ``tokens``: the examples back to back, then ``pad_token_id``;
    - ``labels``: ``tokens[t + 1]`` inside an example; ``pad_token_id`` at each example's last
      token (its label would be the next example's first token) and on padding;
    - ``loss_mask`` (float32): 1 where the label is a target token of the same example, the
      closing ``</s>`` included; 0 on prompt, example boundaries and padding;
    - ``position_ids``: 0, 1, ... restarting at each example (and for the padding tail);
    - ``segment_ids``: example number within the pack, the padding tail one more segment;
    - ``cu_seqlens`` (int32, variable length): segment boundaries ``[0, l1, l1 + l2, ..., s]``.
    """

    def __init__(self, examples: ExampleStream, config: PackedInstructionDatasetConfig) -> None:
        self.examples = examples
        self.config = config
        self.split = (
            examples.split if isinstance(examples, BlendedDataset) else examples.index_split
        )
        identity = {
            "class": type(self).__name__,
            "examples": examples.unique_description,
            "sequence_length": config.sequence_length,
            "pack_algorithm": config.pack_algorithm,
            "pack_window": config.pack_window,
        }
        self.unique_description = json.dumps(identity, indent=2)
        self.unique_description_hash = hashlib.md5(
            self.unique_description.encode(), usedforsecurity=False
        ).hexdigest()
        self.pack_offsets, self.pack_members = self._load_or_build_plan()

    def _build_plan(self) -> tuple[np.ndarray, np.ndarray]:
        return pack_examples(
            stream_lengths(self.examples),
            self.config.sequence_length,
            algorithm=self.config.pack_algorithm,
            window=self.config.pack_window,
        )

    def _load_or_build_plan(self) -> tuple[np.ndarray, np.ndarray]:
        """The pack plan from ``path_to_cache`` when there, else built (and saved when a cache
        folder is set). ``build_packed_datasets`` builds on rank 0 first, then the other ranks,
        which find the plan in the cache, as Megatron's ``BlendedDataset`` does with its indices.
        """
        cache = self.config.path_to_cache
        if not cache:
            return self._build_plan()
        stem = os.path.join(
            cache, f"{self.unique_description_hash}-{type(self).__name__}-{self.split.name}"
        )
        paths = [f"{stem}-pack_offsets.npy", f"{stem}-pack_members.npy"]
        if not all(map(os.path.isfile, paths)):
            offsets, members = self._build_plan()
            os.makedirs(cache, exist_ok=True)
            with open(f"{stem}-description.txt", "w") as f:
                f.write(self.unique_description)
            for path, array in zip(paths, (offsets, members), strict=True):
                tmp = f"{path[:-4]}.tmp{os.getpid()}.npy"
                np.save(tmp, array)
                os.replace(tmp, path)  # atomic: a reader never sees half a file
        offsets, members = (np.load(p, mmap_mode="r") for p in paths)
        return offsets, members

    def __len__(self) -> int:
        return int(self.pack_offsets.size - 1)

    def num_tokens(self) -> int:
        """Non-pad tokens over all packs."""
        return int(stream_lengths(self.examples)[np.asarray(self.pack_members)].sum())

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        if not 0 <= idx < len(self):
            raise IndexError(f"pack {idx} out of range [0, {len(self)})")
        s, pad = self.config.sequence_length, self.config.pad_token_id
        tokens = np.full(s, pad, dtype=np.int64)
        labels = np.full(s, pad, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        position_ids = np.zeros(s, dtype=np.int64)
        segment_ids = np.zeros(s, dtype=np.int64)
        bounds = [0]
        members = self.pack_members[self.pack_offsets[idx] : self.pack_offsets[idx + 1]]
        o = 0
        for k, m in enumerate(members.tolist()):
            example = self.examples[m]
            ids, prompt_len = example["tokens"], int(example["prompt_length"])
            n = ids.size
            if o + n > s:
                raise RuntimeError(f"pack {idx} overflows {s} tokens: the pack plan is stale")
            tokens[o : o + n] = ids
            labels[o : o + n - 1] = ids[1:]
            # Position o + j predicts ids[j + 1]; it carries loss iff that is a target token.
            loss_mask[o + max(prompt_len - 1, 0) : o + n - 1] = 1.0
            position_ids[o : o + n] = np.arange(n)
            segment_ids[o : o + n] = k
            o += n
            bounds.append(o)
        if o < s:
            position_ids[o:] = np.arange(s - o)
            segment_ids[o:] = len(members)
            bounds.append(s)
        return {
            "tokens": tokens,
            "labels": labels,
            "loss_mask": loss_mask,
            "position_ids": position_ids,
            "segment_ids": segment_ids,
            "cu_seqlens": np.asarray(bounds, dtype=np.int32),
        }


def _any_rank(flag: int) -> bool:
    """True when ``flag`` is non-zero on any rank (every rank must call)."""
    if not torch.distributed.is_initialized():
        return bool(flag)
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    t = torch.tensor([flag], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _mean_example_length(prefixes: Sequence[str], weights: Sequence[float], s: int) -> float:
    """Expected packed length of one blended example, from the indexes alone."""
    means = []
    for prefix in prefixes:
        prompt, target = example_lengths(IndexedDataset(prefix))
        means.append(float(np.minimum(prompt + target, s).mean()) if prompt.size else 1.0)
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(w / w.sum(), means))


def build_packed_datasets(
    config: PackedInstructionDatasetConfig,
    num_packs: Sequence[int | None],
    *,
    is_built_on_rank: Callable[[], bool] = lambda: True,
    max_attempts: int = 4,
) -> list[PackedInstructionDataset | None]:
    """Build the train/valid/test packed datasets from ``config.blend_per_split``.

    ``num_packs[i]``: how many packed sequences split ``i`` must hold (train: iterations x global
    batch), or None for one pass over every dataset of the split (weights ignored; the usual
    choice for validation and test). Call on every rank; deterministic given the seed and the
    data, whatever the data-parallel size. Returns None for absent splits and off-rank.
    """
    if config.blend_per_split is None:
        raise ValueError("config.blend_per_split is required (use load_blend + blend_per_split)")
    if config.path_to_cache and not torch.distributed.is_initialized():
        # Megatron-Core's BlendedDataset asks torch.distributed for the rank when it caches.
        raise ValueError("path_to_cache needs torch.distributed initialised (or set it to None)")
    if len(num_packs) != len(Split):
        raise ValueError(f"num_packs needs {len(Split)} entries (train, valid, test)")
    s = config.sequence_length
    results: list[PackedInstructionDataset | None] = [None] * len(Split)
    for split in Split:
        blend = config.blend_per_split[split.value]
        if blend is None:
            continue
        prefixes, weights = blend
        wanted = num_packs[split.value]
        only = [None] * len(Split)
        if wanted is None:
            only[split.value] = (list(prefixes), None)
        else:
            if weights is None:
                weights = [1.0] * len(prefixes)
            only[split.value] = (list(prefixes), list(weights))
            # Packs hold at most s tokens, so this many examples give at least `wanted` packs
            # on average; the loop below tops up when a draw falls short.
            mean_len = _mean_example_length(prefixes, weights, s)
            num_examples = math.ceil(wanted * s / mean_len * 1.01) + 16
        split_config = dataclasses.replace(config, blend_per_split=only)
        for _ in range(max_attempts):
            sizes = [0] * len(Split)
            sizes[split.value] = None if wanted is None else num_examples
            examples = BlendedMegatronDatasetBuilder(
                InstructionExampleDataset, sizes, is_built_on_rank, split_config
            ).build()[split.value]
            packed = BlendedMegatronDatasetBuilder.build_generic_dataset(
                PackedInstructionDataset, lambda e=examples: e is not None, True, examples, config
            )
            # Ranks that built nothing vote 0; all ranks take the same branch (collectives).
            short = int(packed is not None and wanted is not None and len(packed) < wanted)
            if not _any_rank(short):
                break
            num_examples = math.ceil(num_examples * 1.25)  # same on every rank
        else:
            raise RuntimeError(
                f"{split.name}: could not draw {wanted} packs in {max_attempts} attempts"
            )
        if packed is not None:
            logger.info(
                "%s: %d packs of %d tokens from %d examples, %.2f%% non-pad",
                split.name,
                len(packed),
                s,
                len(examples),
                100.0 * packed.num_tokens() / (len(packed) * s),
            )
        results[split.value] = packed
    return results
