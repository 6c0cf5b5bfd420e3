#!/usr/bin/env bash
# Builds the Debian package with Debian's own tooling (dpkg-buildpackage, debhelper, dh-virtualenv)
# from this tree's files (tracked and untracked, not ignored), into dist/llmvirt_VERSION_amd64.deb.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DEPS=(dpkg-dev debhelper dh-virtualenv python3 python3-venv python3-dev libvirt-dev pkg-config gcc)
missing=()
for p in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/llmvirt-$version"
mkdir -p "$src"
git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$src"
cp -r packaging/debian "$src/debian"
(cd "$src" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || { tail -40 "$work/build.log"; exit 1; }
mkdir -p dist
mv "$work"/llmvirt_"$version"_amd64.deb dist/
echo "built dist/llmvirt_${version}_amd64.deb ($(du -h dist/llmvirt_"$version"_amd64.deb | cut -f1))"
