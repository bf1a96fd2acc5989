#!/usr/bin/env bash
# Builds an image FROM scratch from one binary on this host plus the shared libraries ldd says it
# needs, at their own paths: no base image is pulled, nothing secret is inside.
#   docker/build-image.sh             hyok:dev from hyokctl (which runs a node, the coordinator,
#                                     hyok-xks or hyok-dke by subcommand). HYOKCTL=path uses an
#                                     existing binary (the tests use target/debug/hyokctl);
#                                     otherwise a release build is made first.
#   docker/build-image.sh prometheus  hyok-prometheus:dev from the prometheus binary of Debian's
#                                     package (PROMETHEUS=path, default /usr/bin/prometheus), for
#                                     the compose cluster's `prometheus` service.
# IMAGE=name:tag overrides the tag.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-hyok}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs"
case "$what" in
  hyok)
    image=${IMAGE:-hyok:dev}
    bin=${HYOKCTL:-}
    if [ -z "$bin" ]; then
      cargo build --release --bin hyokctl
      bin=target/release/hyokctl
    fi
    name=hyokctl
    dockerfile=docker/Dockerfile
    ;;
  prometheus)
    image=${IMAGE:-hyok-prometheus:dev}
    bin=${PROMETHEUS:-/usr/bin/prometheus}
    if [ ! -x "$bin" ]; then
      echo "$bin not found: install Debian's prometheus package (apt-get install prometheus)" >&2
      exit 1
    fi
    name=prometheus
    dockerfile=docker/prometheus.Dockerfile
    mkdir -p "$ctx/rootfs/data" # its TSDB
    ;;
  *)
    echo "usage: $0 [hyok|prometheus]" >&2
    exit 2
    ;;
esac
cp "$bin" "$ctx/rootfs/$name"
strip "$ctx/rootfs/$name" 2>/dev/null || true
# A static binary has no libraries to copy (ldd then says "not a dynamic executable").
for lib in $(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$dockerfile" "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx"
echo "built $image from $bin"
