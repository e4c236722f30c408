"""Training on Megatron-Core: forward step and loss, optimizer, schedules, checkpoints, trainer."""
