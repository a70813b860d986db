#!/usr/bin/env bash
# Builds the wgsd serving image from deploy/Containerfile with the first container builder
# that works here: podman, buildah, or docker (with a running daemon).
# Usage: deploy/build-image.sh [TAG]   (default wgsd:latest); extra args go to the builder.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-wgsd:latest}"
shift || true

if command -v podman >/dev/null 2>&1; then
  exec podman build -f deploy/Containerfile -t "$tag" "$@" .
elif command -v buildah >/dev/null 2>&1; then
  exec buildah bud -f deploy/Containerfile -t "$tag" "$@" .
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  exec docker build -f deploy/Containerfile -t "$tag" "$@" .
fi
echo "build-image: no container builder works here: install podman (Debian: apt-get install" \
     "podman) or buildah, or start the docker daemon; the build pulls debian and rust base" \
     "images from docker.io" >&2
exit 1
