"""Package metadata for megatron_optiml (OPT-IML on Megatron-Core)."""

from setuptools import find_packages, setup

# Two supported stacks, chosen by the Python version (README, "Which stack where"):
# - Python 3.11: megatron-core 0.16.1 (the newest release for 3.11) with torch 2.13.0, the CPU
#   build that lies on local disk for these machines (a looser range would let pip pull a
#   multi-GB CUDA build);
# - Python 3.12+: megatron-core 0.19.x (what GPU clusters run) with the torch the registry
#   serves for it (a CUDA build, which also runs on CPU). Clusters install their torch first.
# Version-dependent code lives in megatron_optiml/compat.py, keyed on the installed version.
INSTALL_REQUIRES = [
    "torch==2.13.0; python_version < '3.12'",
    "torch>=2.6; python_version >= '3.12'",
    "megatron-core==0.16.1; python_version < '3.12'",
    "megatron-core>=0.19,<0.20; python_version >= '3.12'",
    "numpy",
    "psutil",  # dist_checkpointing's torch_dist writer needs it and does not declare it
    "transformers>=5,<6",
    "tokenizers",
    "safetensors",
    "pyyaml",
    "omegaconf>=2.3",
    "tqdm",
    "jinja2",
    "rouge-score",
    "matplotlib",
    "tensorboard",
]

setup(
    name="megatron_optiml",
    version="0.1.0",
    description="OPT-IML instruction meta-learning on NVIDIA Megatron-Core",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["megatron_optiml*", "data_prep*", "checkpoints_conversion*"]),
    package_data={"megatron_optiml": ["assets/**/*"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "gpu": ["transformer-engine[pytorch]>=2.0"],
        "dev": ["pytest>=8", "pytest-timeout", "ruff>=0.6"],
        # Peers for benchmarks/ only (bench_eval.py times lm-evaluation-harness's HF backend).
        "bench": ["lm-eval==0.4.13", "accelerate"],
    },
    entry_points={
        "console_scripts": [
            "optiml-prepare=data_prep.cli:main",
            "optiml-train=megatron_optiml.cli.train:main",
            "optiml-convert=checkpoints_conversion.cli:main",
            "optiml-evaluate=megatron_optiml.cli.evaluate:main",
            "optiml-plan=megatron_optiml.cli.plan:main",
        ]
    },
)
