"""One task's examples as a Megatron-Core ``MegatronDataset``: a sample is one whole example.

This is the mid-level dataset that ``BlendedMegatronDatasetBuilder`` builds per prefix and
``BlendedDataset`` mixes with the blend's weights, so the weights keep their meaning (shares of
examples, as metaseq's EPS sampling). Packing happens on the blended example stream afterwards.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split

from megatron_optiml.data.config import PackedInstructionDatasetConfig
from megatron_optiml.data.indexed import check_example_format, example_lengths

logger = logging.getLogger(__name__)


class InstructionExampleDataset(MegatronDataset):
    """Examples of one task and split, shuffled per epoch, repeated for as many epochs as
    ``num_samples`` needs.

    Sample ``i`` is ``{"tokens": prompt + target (left-truncated to sequence_length),
    "prompt_length": prompt tokens kept}``. Epoch ``e`` is a permutation of the examples drawn
    from ``(random_seed, e)``, so the order depends only on the seed and the data, and every
    example appears once per epoch.
    """

    def __init__(
        self,
        dataset: IndexedDataset,
        dataset_path: str | None,
        indices: np.ndarray,
        num_samples: int | None,
        index_split: Split,
        config: PackedInstructionDatasetConfig,
    ) -> None:
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        if indices.size == 0:
            raise ValueError(f"{dataset_path}: no examples in the {index_split.name} split")
        epochs = 1 if num_samples is None else max(1, math.ceil(num_samples / indices.size))
        self.sample_index = np.concatenate(
            [
                np.random.default_rng([config.random_seed, epoch]).permutation(indices)
                for epoch in range(epochs)
            ]
        ).astype(np.int64)
        prompt, target = example_lengths(dataset)
        self._prompt_lengths = prompt
        self._target_lengths = target
        logger.debug(
            "%s: %d examples x %d epochs = %d samples",
            dataset_path,
            indices.size,
            epochs,
            self.sample_index.size,
        )

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: IndexedDataset) -> int:
        return len(low_level_dataset) // 2

    @staticmethod
    def build_low_level_dataset(
        dataset_path: str, config: PackedInstructionDatasetConfig
    ) -> IndexedDataset:
        ds = IndexedDataset(dataset_path, multimodal=False, mmap=config.mmap_bin_files)
        check_example_format(ds, dataset_path)
        return ds

    @staticmethod
    def _key_config_attributes() -> list[str]:
        # sequence_length sets the truncation, hence every sample's length.
        return ["random_seed", "sequence_length", "split", "split_matrix"]

    def __len__(self) -> int:
        return int(self.sample_index.size)

    def sample_lengths(self) -> np.ndarray:
        """Tokens each sample occupies in a pack (after truncation), from the index alone."""
        examples = self.sample_index
        total = self._prompt_lengths[examples] + self._target_lengths[examples]
        return np.minimum(total, self.config.sequence_length)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray | int]:
        example = int(self.sample_index[idx])
        prompt_len = int(self._prompt_lengths[example])
        total = prompt_len + int(self._target_lengths[example])
        # Left truncation (metaseq --left-truncation): keep the last sequence_length tokens so the
        # target and its </s> survive; data_prep already truncates, this is a guard.
        cut = max(0, total - self.config.sequence_length)
        tokens = self.dataset.get(2 * example, offset=cut, length=total - cut).astype(np.int64)
        if tokens[-1] != self.config.eos_token_id:
            raise ValueError(
                f"{self.dataset_path}: example {example} does not end with </s> "
                f"(id {self.config.eos_token_id}), got {int(tokens[-1])}"
            )
        return {"tokens": tokens, "prompt_length": max(0, prompt_len - cut)}
