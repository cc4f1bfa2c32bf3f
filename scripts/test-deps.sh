#!/usr/bin/env bash
# What the tests need beyond the Python packages: headless Chromium (the log page is tested in a real
# browser) and a Chinese font (so that page and its screenshot show the questions, not empty boxes);
# PostgreSQL's server (the shared log's tests start their own in a temporary folder) and nginx (the
# several-instance test puts it in front of the bots). Debian's packages, installed once; a browser that
# downloads itself cannot be reached from here. Then llama.cpp's own server, built once from the vendored
# source (scripts/llama-tools.sh; 5-10 minutes the first time), for the several-instance test.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)  # llama-tools.sh builds with it
if [ ${#need[@]} -eq 0 ]; then
  bash "$(dirname "$0")/llama-tools.sh" >/dev/null
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: the tests need ${need[*]} (Debian packages); fix: install them as root: apt-get install ${need[*]}" >&2
  exit 2
fi
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
printf '==> installing %s for the tests (about a minute, once)\n' "${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
bash "$(dirname "$0")/llama-tools.sh" >/dev/null
