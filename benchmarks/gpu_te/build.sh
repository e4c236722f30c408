#!/usr/bin/env bash
# Build transformer_engine_torch (a C++ torch extension, no .cu files) from its sdist into a
# wheel at /tmp/te_wheel. CUDA headers: the toolkit's plus every include/ of the nvidia-* pip
# packages (cuDNN lives there). A missing header gets its folder added and the build retried.
set -uo pipefail
cd /tmp/te_src && rm -rf build_dir && mkdir build_dir && tar xzf transformer_engine_torch-*.tar.gz -C build_dir
cd build_dir/transformer_engine_torch-*
python3 -c "import setuptools.command.bdist_wheel" 2>/dev/null &&
  sed -i 's/^from wheel.bdist_wheel import bdist_wheel as _bdist_wheel/from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel/' setup.py
SP=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
INC=$(find "$SP/nvidia" -maxdepth 4 -type d -name include 2>/dev/null | tr '\n' ':')
export CPLUS_INCLUDE_PATH="${INC}${CPLUS_INCLUDE_PATH:-}"
export MAX_JOBS=${MAX_JOBS:-16} NVTE_PYTORCH_FORCE_BUILD=TRUE NVTE_NO_LOCAL_VERSION=1 NVTE_FRAMEWORK=pytorch
for attempt in 1 2 3 4; do
  start=$(date +%s)
  python3 -m pip wheel --no-build-isolation --no-deps --no-index -w /tmp/te_wheel . > /tmp/te_pip.log 2>&1
  rc=$?
  echo "attempt $attempt: rc=$rc in $(( $(date +%s) - start )) s"
  [ $rc = 0 ] && break
  grep -E "error|Error" /tmp/te_pip.log | head -n 8
  missing=$(grep -oE "fatal error: [^:]+: No such file" /tmp/te_pip.log | head -1 | sed -E 's/fatal error: (.+): No such file/\1/')
  [ -z "$missing" ] && break
  hit=$(find / -path /proc -prune -o -path "*/$missing" -print 2>/dev/null | head -1)
  [ -z "$hit" ] && { echo "header $missing not found anywhere"; break; }
  dir=${hit%/"$missing"}; echo "adding $dir for $missing"; export CPLUS_INCLUDE_PATH="$dir:$CPLUS_INCLUDE_PATH"
done
ls -la /tmp/te_wheel 2>/dev/null
echo BUILD_DONE rc=$rc
