#!/bin/sh
# Test host init: fresh host keys per container, the operator's public key from AUTHORIZED_KEY,
# sshd in the background, the Docker engine when installed (started the way `bootstrap` starts
# it on a host without systemd: dockerd in its own session, pid in /var/run/docker.pid), then
# wait. PID 1 is not sshd, so the tests can kill sshd and start it again.
set -e
ssh-keygen -A >/dev/null
if [ -n "${AUTHORIZED_KEY:-}" ]; then
  printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
fi
/usr/sbin/sshd -E /var/log/sshd.log
if command -v dockerd >/dev/null; then
  setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
fi
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
