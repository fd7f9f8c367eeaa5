#!/bin/sh
# Fresh host keys per container; the operator's public key from AUTHORIZED_KEY in PID 1's environment.
set -e
ssh-keygen -A >/dev/null
key=$(tr '\0' '\n' < /proc/1/environ | sed -n 's/^AUTHORIZED_KEY=//p')
if [ -n "$key" ]; then
  printf '%s\n' "$key" > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
fi
