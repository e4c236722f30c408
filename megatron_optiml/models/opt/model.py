"""``OPTModel``: Megatron-Core's ``GPTModel`` whose output layer runs only on the tokens the loss
counts.

Instruction tuning scores the target tokens alone: on the bundled OPT-IML Bench sample 4.5% of
the training tokens are targets (prompts hold task definitions and demonstrations). The vocabulary
projection (``hidden x vocab`` per token, forward and both backward GEMMs) is a third of the step's
FLOPs at opt-125m, and ``GPTModel`` computes it, plus the ``[s, b, vocab]`` logits and the cross
entropy's softmax copy, for every token. When the forward step passes ``loss_mask`` with
``labels``, this class gathers the hidden states of the masked-in positions, runs the same
output layer (tied embedding weight) and the same ``compute_language_model_loss`` on them, and
scatters the per-token losses back to ``[b, s]`` with zeros elsewhere. The loss, the gradients
and every logit that counts are the ones ``GPTModel`` computes (up to float summation order);
positions outside the mask get loss 0, which the label-only loss multiplies by 0 anyway.

It falls back to ``GPTModel``'s own path (every position) where the selection would not be the
same computation: no labels or no ``loss_mask`` (logits for evaluation and conversion), sequence
parallelism (the output layer all-gathers sequence shards itself), multi-token prediction,
inference, or ``loss_tokens_only=False``.
"""

from __future__ import annotations

from typing import Any

from megatron.core.models.gpt import GPTModel


class OPTModel(GPTModel):
    """``GPTModel`` + the output layer on loss tokens only (see the module docstring)."""

    def __init__(self, *args: Any, loss_tokens_only: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_tokens_only = loss_tokens_only

    def _selects(self, labels, loss_mask, kwargs: dict[str, Any]) -> bool:
        cfg = self.config
        return (
            self.loss_tokens_only
            and self.post_process
            and labels is not None
            and loss_mask is not None
            and not cfg.sequence_parallel
            and not getattr(cfg, "mtp_num_layers", None)
            and not getattr(cfg, "use_mup", False)
            and not kwargs.get("mtp_in_postprocess")
            and kwargs.get("inference_context") is None
            and kwargs.get("inference_params") is None
            and kwargs.get("output_processor") is None
        )

    def _postprocess(self, hidden_states, input_ids, position_ids, labels, *args, **kwargs):
        loss_mask = kwargs.get("loss_mask")
        if args or not self._selects(labels, loss_mask, kwargs):
            return super()._postprocess(
                hidden_states, input_ids, position_ids, labels, *args, **kwargs
            )
        s, b, h = hidden_states.shape
        # Positions in the [s, b] order of the hidden states.
        keep = loss_mask.transpose(0, 1).reshape(-1).nonzero().squeeze(1)
        selected = hidden_states.reshape(s * b, h).index_select(0, keep).unsqueeze(1)
        output_weight = None
        if self.share_embeddings_and_output_weights:
            output_weight = self.shared_embedding_or_output_weight()
        logits, _ = self.output_layer(
            selected,
            weight=output_weight,
            runtime_gather_output=kwargs.get("runtime_gather_output"),
        )  # [n, 1, vocab / TP]
        kept_labels = labels.transpose(0, 1).reshape(-1).index_select(0, keep).unsqueeze(0)
        kept_loss = self.compute_language_model_loss(kept_labels, logits)  # [1, n]
        loss = kept_loss.new_zeros(s * b).index_copy(0, keep, kept_loss.reshape(-1))
        return loss.view(s, b).transpose(0, 1).contiguous()  # [b, s], as GPTModel returns
