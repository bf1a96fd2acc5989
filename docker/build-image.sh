#!/usr/bin/env bash
# Builds the image hyok:dev FROM scratch: hyokctl built on this host plus the shared libraries
# ldd says it needs, at their own paths. HYOKCTL=path uses an existing binary (the tests use
# target/debug/hyokctl); otherwise a release build is made first. IMAGE=name:tag overrides the tag.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-hyok:dev}
bin=${HYOKCTL:-}
if [ -z "$bin" ]; then
  cargo build --release --bin hyokctl
  bin=target/release/hyokctl
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs"
cp "$bin" "$ctx/rootfs/hyokctl"
strip "$ctx/rootfs/hyokctl" 2>/dev/null || true
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp docker/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx"
echo "built $image from $bin"
