#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a real Slurm and munge for tests/slurm
# (Debian 12 ships Slurm 22.05; ~15 s). Nothing is started or configured here: the tests run
# their own private munged/slurmctld/slurmd (tests/slurm/local_slurm.py) and skip when the
# programs are absent, so this step is safe to skip on a developer machine.
#
# -e: stop on the first failure; -u: unset variables are errors; pipefail: no hidden failures.
set -euo pipefail
# The daemons install into sbin, which a CI shell's PATH may lack.
export PATH="$PATH:/usr/sbin:/usr/local/sbin:/sbin"

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    echo "ci_system_deps: slurm-wlm and munge already installed"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    # apt needs root; the Slurm tests need root too (slurmd launches the jobs), so they skip.
    echo "ci_system_deps: not root: skipping apt-get (tests/slurm will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq slurm-wlm munge
echo "ci_system_deps: $(slurmctld -V), munge $(munged --version 2>&1 | head -n 1)"
