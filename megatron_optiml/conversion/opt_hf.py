"""Hugging Face OPT <-> canonical OPT state dict: the table's HF names, small transforms.

The names are the ``hf`` column of ``models/opt/params.py``; ``HF_TO_CANONICAL`` and
``CANONICAL_TO_HF`` are views of it. Several HF names map to one canonical name only for the
fused QKV. The irregular parts (the table's ``transform`` column) are small pure functions with
inverses: :func:`fuse_qkv` / :func:`split_qkv` (Megatron's per-head ``[q_h; k_h; v_h]``
layout), :func:`drop_position_offset` / :func:`add_position_offset` (HF keeps OPT's 2 unused
position rows in front), :func:`pad_vocab` / :func:`unpad_vocab`, and
:func:`check_tied_lm_head`. Configs we cannot express are refused naming the field.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from megatron_optiml.conversion.safetensors_stream import (
    SafetensorsFileWriter,
    TensorSpec,
    plan_shards,
    read_safetensors_header,
)
from megatron_optiml.models.opt import params
from megatron_optiml.models.opt.builder import check_supported
from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.models.opt.params import (
    CANONICAL,
    OUTPUT_LAYER,
    POSITION_OFFSET,
    WORD_EMBEDDINGS,
    canonical_groups,
    canonical_shapes,
)

logger = logging.getLogger(__name__)


# HF name pattern -> canonical name pattern (``{i}`` is the layer index): a view of the table.
HF_TO_CANONICAL: dict[str, str] = {hf: p.local for p in CANONICAL for hf in p.hf}

# canonical pattern -> HF patterns (q, k, v order for the fused QKV).
CANONICAL_TO_HF: dict[str, tuple[str, ...]] = {p.local: p.hf for p in CANONICAL}

# The tied output projection (present in some HF checkpoints, never stored separately by us)
# and the embeddings it must equal.
(LM_HEAD,) = params.hf_names(OUTPUT_LAYER)
(EMBED_TOKENS,) = params.hf_names(WORD_EMBEDDINGS)


def normalize_hf_name(name: str) -> str:
    """HF hub ``.bin`` files of OPTModel omit the ``model.`` prefix; accept both spellings."""
    return "model." + name if name.startswith("decoder.") else name


def hf_to_canonical_name(name: str) -> tuple[str, str]:
    """(canonical name, HF pattern) for an HF tensor name; raises naming unknown keys."""
    name = normalize_hf_name(name)
    try:
        row, j, layer = params.hf_param(name)
    except KeyError:
        row = None
    if row is None or row.tied_to is not None:
        raise KeyError(f"unknown Hugging Face OPT tensor {name!r}: no entry in HF_TO_CANONICAL")
    return params.at_layer(row.local, layer), row.hf[j]


def canonical_to_hf_names(name: str) -> tuple[str, ...]:
    """HF names of one canonical tensor (three for the fused QKV)."""
    try:
        row, _ = params.param(name)
    except KeyError:
        row = None
    if row is None or row.tied_to is not None or row.local != params.split_layer(name)[0]:
        raise KeyError(f"canonical tensor {name!r} has no Hugging Face name")
    return params.hf_names(name)


# ---- irregular transforms (each with its inverse) ------------------------------------------


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Separate q/k/v projections (weight [h, h] or bias [h]) -> Megatron's fused per-head
    layout ``[q_0; k_0; v_0; q_1; ...]`` ([3h, h] or [3h]), so a TP split keeps whole heads."""
    head_dim = q.shape[0] // num_heads
    parts = [t.reshape(num_heads, head_dim, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * q.shape[0], *q.shape[1:])


def split_qkv(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_qkv`."""
    h = qkv.shape[0] // 3
    per_head = qkv.reshape(num_heads, 3, h // num_heads, *qkv.shape[1:])
    q, k, v = (per_head[:, j].reshape(h, *qkv.shape[1:]).contiguous() for j in range(3))
    return q, k, v


def drop_position_offset(hf_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's [max_pos + 2, h] table -> (Megatron's [max_pos, h] table, the 2 offset rows).

    Megatron's position 0 is HF row 2. Rows 0-1 are never read for unpadded tokens; we keep
    them beside the checkpoint so HF -> Megatron -> HF is bit-exact.
    """
    return hf_positions[POSITION_OFFSET:].contiguous(), hf_positions[:POSITION_OFFSET].clone()


def add_position_offset(
    positions: torch.Tensor, offset_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`drop_position_offset`; zeros when the offset rows are unknown."""
    if offset_rows is None:
        offset_rows = positions.new_zeros(POSITION_OFFSET, positions.shape[1])
    if tuple(offset_rows.shape) != (POSITION_OFFSET, positions.shape[1]):
        raise ValueError(
            f"position offset rows have shape {tuple(offset_rows.shape)}, expected "
            f"({POSITION_OFFSET}, {positions.shape[1]})"
        )
    return torch.cat([offset_rows.to(positions.dtype), positions], dim=0)


def pad_vocab(embeddings: torch.Tensor, rows: int) -> torch.Tensor:
    """Append zero rows up to ``rows`` (a TP-divisible vocabulary); their logits are never
    targets."""
    if rows < embeddings.shape[0]:
        raise ValueError(f"cannot pad a vocabulary of {embeddings.shape[0]} rows down to {rows}")
    if rows == embeddings.shape[0]:
        return embeddings
    pad = embeddings.new_zeros(rows - embeddings.shape[0], *embeddings.shape[1:])
    return torch.cat([embeddings, pad], dim=0)


def unpad_vocab(embeddings: torch.Tensor, rows: int) -> torch.Tensor:
    """Inverse of :func:`pad_vocab`."""
    if rows > embeddings.shape[0]:
        raise ValueError(f"cannot unpad {embeddings.shape[0]} rows to {rows}")
    return embeddings[:rows].contiguous()


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    if multiple < 1:
        raise ValueError(f"pad_vocab_to_multiple_of={multiple}: expected >= 1")
    return -(-vocab_size // multiple) * multiple


def check_tied_lm_head(lm_head: torch.Tensor, embed_tokens: torch.Tensor) -> None:
    """OPT ties the output projection to the input embeddings; refuse an untied one."""
    if lm_head.shape != embed_tokens.shape or not torch.equal(lm_head, embed_tokens):
        raise ValueError(
            f"tensor {LM_HEAD!r} differs from {EMBED_TOKENS!r}: untied "
            "output embeddings are not supported (OPT ties them)"
        )


# ---- config -------------------------------------------------------------------------------

# HF OPTConfig fields whose other values Megatron's GPT block (as we build it) cannot express.
_REQUIRED_CONFIG: dict[str, Any] = {
    "model_type": "opt",
    "do_layer_norm_before": True,
    "enable_bias": True,
    "layer_norm_elementwise_affine": True,
    "activation_function": "relu",
    "_remove_final_layer_norm": False,
    "tie_word_embeddings": True,
}


def arch_from_hf_config(
    config: Mapping[str, Any], *, pad_vocab_to_multiple_of: int = 1
) -> tuple[OPTArch, int]:
    """(OPTArch, HF vocabulary size) from an HF OPT ``config.json`` dict; refuses naming the field."""
    hidden = config["hidden_size"]
    proj = config.get("word_embed_proj_dim", hidden)
    if not config.get("do_layer_norm_before", True) or proj not in (None, hidden):
        arch = OPTArch(
            num_layers=config["num_hidden_layers"],
            hidden_size=hidden,
            num_attention_heads=config["num_attention_heads"],
            ffn_hidden_size=config["ffn_dim"],
            do_layer_norm_before=config.get("do_layer_norm_before", True),
            word_embed_proj_dim=proj,
        )
        check_supported(arch)  # raises with the opt-350m explanation
    for field, want in _REQUIRED_CONFIG.items():
        got = config.get(field, want)
        if got != want:
            raise ValueError(
                f"HF config field {field}={got!r} is not supported (Megatron's OPT needs {want!r})"
            )
    vocab = config["vocab_size"]
    arch = OPTArch(
        num_layers=config["num_hidden_layers"],
        hidden_size=hidden,
        num_attention_heads=config["num_attention_heads"],
        ffn_hidden_size=config["ffn_dim"],
        vocab_size=padded_vocab_size(vocab, pad_vocab_to_multiple_of),
        max_position_embeddings=config["max_position_embeddings"],
    )
    return arch, vocab


def hf_config_from_arch(
    arch: OPTArch, vocab_size: int, dtype: torch.dtype, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An HF ``config.json`` dict; ``base`` (the source's config, if known) keeps its extras."""
    from transformers import OPTConfig

    check_supported(arch)
    fields = dict(base or {})
    fields.pop("transformers_version", None)
    fields.update(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        ffn_dim=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        max_position_embeddings=arch.max_position_embeddings,
        word_embed_proj_dim=arch.hidden_size,
        do_layer_norm_before=True,
        activation_function="relu",
        enable_bias=True,
        layer_norm_elementwise_affine=True,
        tie_word_embeddings=True,
        architectures=["OPTForCausalLM"],
        dtype=str(dtype).removeprefix("torch."),
    )
    fields.setdefault("pad_token_id", 1)
    fields.setdefault("bos_token_id", 2)
    fields.setdefault("eos_token_id", 2)
    fields.pop("model_type", None)
    return OPTConfig(**fields).to_dict()


def expected_hf_shapes(arch: OPTArch, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for a model of this shape."""
    out: dict[str, tuple[int, ...]] = {}
    for canon in canonical_shapes(arch):
        shape = params.hf_shape_of(params.param(canon)[0], arch, vocab_size)
        for n in canonical_to_hf_names(canon):
            out[n] = shape
    return out


# ---- canonical groups <-> HF tensors --------------------------------------------------------


def hf_tensor_plan(
    arch: OPTArch, vocab_size: int, dtypes: Mapping[str, torch.dtype]
) -> dict[str, TensorSpec]:
    """HF tensor name -> shape and dtype, in the order exports produce them (canonical groups;
    q, k, v), from the canonical tensors' dtypes: the layout :class:`HFShardWriter` plans."""
    shapes = expected_hf_shapes(arch, vocab_size)
    plan: dict[str, TensorSpec] = {}
    for group in canonical_groups(arch):
        for canon in group:
            for name in canonical_to_hf_names(canon):
                plan[name] = TensorSpec(shapes[name], dtypes[canon])
    return plan


def hf_group_to_canonical(
    hf: Mapping[str, torch.Tensor], arch: OPTArch
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One group of HF tensors -> (canonical tensors, position offset rows if in the group)."""
    gathered: dict[str, dict[int, torch.Tensor]] = {}
    for name, t in hf.items():
        canon, pattern = hf_to_canonical_name(name)
        gathered.setdefault(canon, {})[params.hf_param(pattern)[1]] = t
    out: dict[str, torch.Tensor] = {}
    offset_rows = None
    for canon, parts in gathered.items():
        transform = params.param(canon)[0].transform
        if transform == "qkv":
            out[canon] = fuse_qkv(parts[0], parts[1], parts[2], arch.num_attention_heads)
            continue
        (t,) = parts.values()
        if transform == "vocab":
            t = pad_vocab(t, arch.vocab_size)
        elif transform == "positions":
            t, offset_rows = drop_position_offset(t)
        out[canon] = t
    return out, offset_rows


def canonical_group_to_hf(
    tensors: Mapping[str, torch.Tensor],
    arch: OPTArch,
    vocab_size: int,
    position_offset_rows: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hf_group_to_canonical`."""
    out: dict[str, torch.Tensor] = {}
    for canon, t in tensors.items():
        names = canonical_to_hf_names(canon)
        transform = params.param(canon)[0].transform
        if transform == "qkv":
            out.update(zip(names, split_qkv(t, arch.num_attention_heads)))
            continue
        if transform == "vocab":
            t = unpad_vocab(t, vocab_size)
        elif transform == "positions":
            t = add_position_offset(t, position_offset_rows)
        out[names[0]] = t.contiguous()
    return out


# ---- reading an HF directory lazily ---------------------------------------------------------

_WEIGHT_FILES = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


class HFCheckpointReader:
    """An HF OPT folder read tensor group by tensor group (safetensors, or ``.bin`` with
    ``torch.load(weights_only=True, mmap=True)``); files are opened per group and closed after,
    so memory stays near one group."""

    def __init__(self, directory: str | os.PathLike, *, pad_vocab_to_multiple_of: int = 1):
        self.dir = Path(directory)
        config_path = self.dir / "config.json"
        if not config_path.exists():
            raise FileNotFoundError(f"{config_path}: missing (not a Hugging Face model folder?)")
        self.config = json.loads(config_path.read_text())
        self.arch, self.vocab_size = arch_from_hf_config(
            self.config, pad_vocab_to_multiple_of=pad_vocab_to_multiple_of
        )
        self.weight_map = self._weight_map()  # normalized HF name -> (file, name in file)
        self._check_names()

    def _weight_map(self) -> dict[str, tuple[str, str]]:
        for index, single in _WEIGHT_FILES:
            if (self.dir / index).exists():
                wm = json.loads((self.dir / index).read_text())["weight_map"]
                return {normalize_hf_name(k): (f, k) for k, f in wm.items()}
            if (self.dir / single).exists():
                return {normalize_hf_name(k): (single, k) for k in self._file_keys(single)}
        raise FileNotFoundError(
            f"{self.dir}: no model.safetensors[.index.json] or pytorch_model.bin[.index.json]"
        )

    def _file_keys(self, file: str) -> list[str]:
        if file.endswith(".safetensors"):
            return list(read_safetensors_header(self.dir / file))
        return list(self._load_bin(file))

    def _load_bin(self, file: str) -> dict[str, torch.Tensor]:
        # weights_only: no arbitrary code from the pickle; mmap: tensors are read on touch.
        return torch.load(self.dir / file, map_location="cpu", weights_only=True, mmap=True)

    def _check_names(self) -> None:
        expected = expected_hf_shapes(self.arch, self.vocab_size)
        names = set(self.weight_map) - {LM_HEAD}
        for name in sorted(names):
            hf_to_canonical_name(name)  # raises naming an unknown key
        missing = sorted(set(expected) - names)
        if missing:
            raise KeyError(f"{self.dir}: missing tensors {missing[:6]} (of {len(missing)})")
        # Headers only (no tensor data): a truncated file or a tensor whose shape contradicts
        # config.json is refused before anything is written.
        for file in sorted({f for f, _ in self.weight_map.values() if f.endswith(".safetensors")}):
            if not (self.dir / file).exists():
                raise FileNotFoundError(f"{self.dir / file}: missing (listed in the index)")
            shapes = read_safetensors_header(self.dir / file)
            for name, (f, key) in self.weight_map.items():
                if f == file and name in expected and shapes[key] != expected[name]:
                    raise ValueError(
                        f"{self.dir / file}: tensor {name!r} has shape {shapes[key]}, "
                        f"config.json implies {expected[name]}"
                    )

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Read HF tensors by (normalized) name; checks each shape against the config."""
        expected = expected_hf_shapes(self.arch, self.vocab_size)
        by_file: dict[str, list[str]] = {}
        for n in names:
            by_file.setdefault(self.weight_map[n][0], []).append(n)
        out: dict[str, torch.Tensor] = {}
        for file, file_names in by_file.items():
            if file.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(self.dir / file, framework="pt") as f:
                    for n in file_names:
                        out[n] = f.get_tensor(self.weight_map[n][1])
            else:
                sd = self._load_bin(file)
                for n in file_names:
                    out[n] = sd[self.weight_map[n][1]].clone()
                del sd
        for n, t in out.items():
            if n in expected and tuple(t.shape) != expected[n]:
                raise ValueError(
                    f"tensor {n!r}: shape {tuple(t.shape)} does not match config.json "
                    f"(expected {expected[n]})"
                )
        return out

    def dtype(self) -> torch.dtype:
        (name,) = params.hf_names("decoder.final_layernorm.weight")
        return self.read([name])[name].dtype

    def canonical_groups(self) -> Iterator[dict[str, torch.Tensor]]:
        """Canonical tensors group by group; sets :attr:`position_offset_rows` on the way."""
        self.position_offset_rows: torch.Tensor | None = None
        for group in canonical_groups(self.arch):
            hf_names = [h for c in group for h in canonical_to_hf_names(c)]
            hf = self.read(hf_names)
            if WORD_EMBEDDINGS in group and LM_HEAD in self.weight_map:
                check_tied_lm_head(self.read([LM_HEAD])[LM_HEAD], hf[EMBED_TOKENS])
            tensors, rows = hf_group_to_canonical(hf, self.arch)
            if rows is not None:
                self.position_offset_rows = rows
            yield tensors


# ---- writing an HF directory in shards -------------------------------------------------------


class HFShardWriter:
    """Write planned HF tensors into ``model-0000k-of-0000n.safetensors`` shards of at most
    ``max_shard_bytes`` (one ``model.safetensors`` if it all fits) plus the index.

    The plan (name -> :class:`TensorSpec`, in arrival order; see :func:`hf_tensor_plan`) fixes
    the shards and each shard's header before any data arrives, so :meth:`add` streams every
    tensor to its offset and keeps no reference: memory is the caller's current group. Files
    are byte-identical to ``safetensors.torch.save_file`` of the same tensors, written under
    temporary names and renamed by :meth:`close`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        plan: Mapping[str, TensorSpec],
        max_shard_bytes: int = 5 * 2**30,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shards = plan_shards(plan, max_shard_bytes)
        self._shard_of = {name: k for k, shard in enumerate(self.shards) for name in shard}
        self._files: dict[int, SafetensorsFileWriter] = {}
        self.total_bytes = sum(spec.nbytes for spec in plan.values())

    def _tmp_name(self, k: int) -> str:
        return f".shard-{k:05d}.safetensors"

    def _file(self, k: int) -> SafetensorsFileWriter:
        if k not in self._files:
            self._files[k] = SafetensorsFileWriter(
                self.dir / self._tmp_name(k), self.shards[k], metadata={"format": "pt"}
            )
        return self._files[k]

    def add(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Write tensors of the plan (any order); a shard's file closes once it is complete."""
        for name, t in tensors.items():
            if name not in self._shard_of:
                raise KeyError(f"tensor {name!r} is not in the export plan (unexpected name)")
            f = self._file(self._shard_of[name])
            f.write(name, t)
            if not f.missing:
                f.close()

    def close(self) -> None:
        """Check that every planned tensor was written, then rename the shards and write the
        index."""
        missing = [n for n, k in self._shard_of.items() if k not in self._files]
        missing += [n for f in self._files.values() for n in f.missing]
        if missing:
            raise ValueError(f"HF export incomplete: tensors never written: {missing[:5]}...")
        for k in range(len(self.shards)):
            self._file(k).close()  # opens (and closes) only a shard planned empty
        n = len(self.shards)
        if n == 1:
            os.replace(self.dir / self._tmp_name(0), self.dir / "model.safetensors")
            return
        weight_map = {}
        for k, shard in enumerate(self.shards):
            final = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.dir / self._tmp_name(k), self.dir / final)
            weight_map.update(dict.fromkeys(shard, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.dir / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2, sort_keys=True) + "\n"
        )


def write_hf_metadata(
    directory: str | os.PathLike,
    config: Mapping[str, Any],
    tokenizer_dir: str | os.PathLike | None = None,
) -> None:
    """config.json, generation_config.json and OPT's tokenizer files (HF OPT's BOS behaviour:
    ``AutoTokenizer`` adds ``</s>`` (id 2) in front, as the hub's OPT tokenizers do)."""
    from transformers import GenerationConfig, OPTConfig

    from megatron_optiml.tokenizer import OPT_TOKENIZER_DIR

    directory = Path(directory)
    fields = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    hf_config = OPTConfig(**fields)
    hf_config.save_pretrained(directory)
    GenerationConfig.from_model_config(hf_config).save_pretrained(directory)
    src = Path(tokenizer_dir) if tokenizer_dir is not None else OPT_TOKENIZER_DIR
    for name in ("vocab.json", "merges.txt"):
        if not (src / name).exists():
            raise FileNotFoundError(f"{src / name}: tokenizer file missing")
        (directory / name).write_bytes((src / name).read_bytes())
    tok_config: dict[str, Any] = {}
    if (src / "tokenizer_config.json").exists():
        tok_config = json.loads((src / "tokenizer_config.json").read_text())
    tok_config.update(
        tokenizer_class="GPT2Tokenizer",
        add_bos_token=True,
        add_prefix_space=False,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=config.get("max_position_embeddings", 2048),
    )
    tok_config.setdefault("unk_token", "<unk>")
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
