#!/usr/bin/env bash
# What the tests need beyond the Python packages: headless Chromium (the log page is tested in a real
# browser) and a Chinese font (so that page and its screenshot show the questions, not empty boxes).
# Debian's packages, installed once; a browser that downloads itself cannot be reached from here.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: the tests need ${need[*]} (Debian packages); fix: install them as root: apt-get install ${need[*]}" >&2
  exit 2
fi
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
printf '==> installing %s for the browser test (about a minute, once)\n' "${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
