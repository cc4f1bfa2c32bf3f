#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-batched-bench, llama-bench, llama-server) from the source that
# llama-cpp-python vendors, with the same CPU flags the setup used, so `bot bench` can compare the bot with
# llama.cpp alone. Idempotent: the tools are kept under the setup cache, keyed by version and flags.
# Prints the folder holding the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
CACHE=${BOT_CACHE_DIR:-$HOME/.cache/grounded-bot}
LLAMA_VERSION=0.3.36
ARGS=$(cat "$VENV/.llama-cmake-args" 2>/dev/null || echo "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON")
KEY=$(printf '%s' "$LLAMA_VERSION $ARGS" | sha256sum | cut -c1-12)
OUT="$CACHE/llama-tools/$KEY"
TOOLS="llama-batched-bench llama-bench llama-server"

if [ -x "$OUT/bin/llama-batched-bench" ] && [ -x "$OUT/bin/llama-server" ]; then
  echo "$OUT/bin"
  exit 0
fi
printf '==> building %s from llama-cpp-python %s (5-10 minutes on 2 cores): %s\n' "$TOOLS" "$LLAMA_VERSION" "$ARGS" >&2
SRC="$CACHE/llama-src/$LLAMA_VERSION"
if [ ! -d "$SRC/vendor/llama.cpp" ]; then
  mkdir -p "$SRC.dl"
  "$VENV/bin/pip" download --quiet --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$SRC.dl"
  mkdir -p "$SRC"
  tar -xzf "$SRC.dl"/llama_cpp_python-*.tar.gz -C "$SRC" --strip-components=1
fi
# shellcheck disable=SC2086 # ARGS is a list of flags
cmake -S "$SRC/vendor/llama.cpp" -B "$OUT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release $ARGS \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >&2
# shellcheck disable=SC2086
cmake --build "$OUT/build" --target $TOOLS -j "$(nproc)" >&2
mkdir -p "$OUT/bin"
for t in $TOOLS; do cp "$OUT/build/bin/$t" "$OUT/bin/"; done
echo "$OUT/bin"
