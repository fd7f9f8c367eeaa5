#!/bin/sh
set -e
case "${1:-}" in -*) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
  chown -R redis:redis /data 2>/dev/null || true
  # protected-mode off and bind all, as the official image's default config does
  exec setpriv --reuid=redis --regid=redis --init-groups "$@" --bind 0.0.0.0 --protected-mode no --dir /data
fi
exec "$@"
