"""Model families built as Megatron-Core GPTModel specs."""
