#!/usr/bin/env bash
# One-shot, idempotent setup on a fresh machine: the venv, llama-cpp-python compiled for this CPU,
# the project, and the model files. Re-running it only redoes what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
CACHE=${BOT_CACHE_DIR:-$HOME/.cache/grounded-bot}
LLAMA_VERSION=0.3.36
MODELS=${BOT_SETUP_MODELS:-"qwen2.5-coder-1.5b qwen2.5-coder-0.5b"}
SMOKE_MODEL=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

step() { printf '==> %s\n' "$*" >&2; }

# llama.cpp flags from what this CPU says it can do. Never AMX or AVX512-FP16: a build that used them
# died with "Illegal instruction" here although the CPU lists them.
cpu_args() {
  local flags args="-DGGML_NATIVE=OFF"
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  has() { [[ "$flags" == *" $1 "* ]]; }
  has avx && args+=" -DGGML_AVX=ON"
  has avx2 && args+=" -DGGML_AVX2=ON"
  has fma && args+=" -DGGML_FMA=ON"
  has f16c && args+=" -DGGML_F16C=ON"
  if [ "${1:-}" != avx2-only ] && has avx512f && has avx512bw && has avx512vl && has avx512dq; then
    args+=" -DGGML_AVX512=ON"
    has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
    has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
    has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
    has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
  fi
  echo "$args -DLLAVA_BUILD=OFF"
}

# Build (or take from our own cache, keyed by version and flags) and install llama-cpp-python.
install_llama() {
  local args=$1 key dir wheel
  key=$(printf '%s' "$LLAMA_VERSION $args" | sha256sum | cut -c1-12)
  dir="$CACHE/llama-wheels/$key"
  wheel=$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    step "compiling llama-cpp-python $LLAMA_VERSION for this CPU (5-8 minutes on 2 cores): $args"
    mkdir -p "$dir"
    CMAKE_ARGS="$args" "$VENV/bin/pip" wheel --quiet --no-cache-dir --no-deps \
      "llama-cpp-python==$LLAMA_VERSION" -w "$dir"
    wheel=$(ls "$dir"/llama_cpp_python-*.whl | head -n1)
  fi
  step "installing $(basename "$wheel")"
  "$VENV/bin/pip" uninstall --quiet --yes llama-cpp-python >/dev/null 2>&1 || true
  "$VENV/bin/pip" install --quiet "$wheel"
  echo "$args" > "$VENV/.llama-cmake-args"
}

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi

ARGS=$(cpu_args)
if [ "$(cat "$VENV/.llama-cmake-args" 2>/dev/null)" != "$ARGS" ] && \
   [ "$(cat "$VENV/.llama-cmake-args" 2>/dev/null)" != "$(cpu_args avx2-only)" ]; then
  install_llama "$ARGS"
fi

STAMP=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.project-stamp" 2>/dev/null)" != "$STAMP" ]; then
  step "installing the project and its dependencies"
  "$VENV/bin/pip" install --quiet -e ".[dev]"
  echo "$STAMP" > "$VENV/.project-stamp"
fi

for m in $MODELS; do
  "$VENV/bin/bot" model fetch "$m" >/dev/null
done

# A one-token decode in a subprocess: a build the CPU cannot run dies here, not in front of a user.
if [ "$(cat "$VENV/.llama-smoke" 2>/dev/null)" != "$(cat "$VENV/.llama-cmake-args")" ]; then
  if ! "$VENV/bin/python" -m bot.backends.smoke "$SMOKE_MODEL" >/dev/null 2>&1; then
    step "the llama.cpp build does not run on this CPU; rebuilding with the AVX2 set"
    install_llama "$(cpu_args avx2-only)"
    "$VENV/bin/python" -m bot.backends.smoke "$SMOKE_MODEL"
  fi
  cat "$VENV/.llama-cmake-args" > "$VENV/.llama-smoke"
fi
step "setup complete"
