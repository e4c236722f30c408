"""megatron_optiml: OPT-IML instruction meta-learning on NVIDIA Megatron-Core."""

__version__ = "0.1.0"
