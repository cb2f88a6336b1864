#!/usr/bin/env bash
# Installs the system libraries a napari viewer needs under Xvfb (Debian/Ubuntu), when missing.
# Idempotent: does nothing where they are present. Needs root (or sudo) on a fresh machine.
set -euo pipefail
PKGS="xvfb libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: not a Debian system; install Xvfb, Mesa GL and the xcb libraries yourself:$missing" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo -n" || {
        echo "system-deps: need root to install:$missing" >&2; exit 1; }
fi
echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
