# shellcheck disable=SC2154  # cli (the client) and f (its 0600 option file) come from the MY_AUTH prelude
# Load a SQL dump (on stdin) into the server with the client in its safe mode. Extra arguments go
# to the client.
#
# A dump can carry the client's own commands besides SQL: "\! cmd" runs a shell (as root, in this
# container), "\. file" reads a file, "\T file" writes one. We do what MariaDB does for its own
# dumps (mariadb-dump 10.5.25/10.6.18/10.11.8/11.x+ begin with "/*M!999999\- enable the sandbox
# mode */"): load with --sandbox where the client has it, so any such command fails and stops the
# load before it runs. A client without it (MySQL's mysql, an older MariaDB) gets --binary-mode,
# which in MySQL 5.6.3+ and MariaDB turns off every client command but charset (\C) and delimiter
# for piped input; MySQL 8.0.41/8.4.4/9.2 call the same switch --commands=OFF.
if "$cli" --help 2>/dev/null | grep -q -e '--sandbox'; then safe=--sandbox; else safe=--binary-mode; fi
"$cli" --defaults-extra-file="$f" "$safe" "$@"
