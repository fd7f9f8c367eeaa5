"""The shell preludes that read a database's credentials from its container's own environment.

One place for the four of them, so they can be replaced by imports of ``memstack_ops.kinds``
(issue 11, item 1) in one edit. Each ends with ``; `` (or a space) so a script can follow it.
"""

PG_AUTH = ('[ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "$POSTGRES_PASSWORD_FILE" ] && '
           'POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); PGPASSWORD="${POSTGRES_PASSWORD:-}"; export PGPASSWORD; ')
MY_AUTH = ("f=$(mktemp) || exit 1; trap 'rm -f \"$f\"' EXIT; "
           'p="${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}"; u=root; '
           'if [ -z "$p" ]; then u="${MYSQL_USER:-${MARIADB_USER:-root}}"; p="${MYSQL_PASSWORD:-${MARIADB_PASSWORD:-}}"; fi; '
           "printf '[client]\\nuser=%s\\npassword=\"%s\"\\n' \"$u\" \"$p\" > \"$f\"; "
           "cli=$(command -v mariadb || command -v mysql); dump=$(command -v mariadb-dump || command -v mysqldump); ")
REDIS_AUTH = ('a="${REDISCLI_AUTH:-${REDIS_PASSWORD:-}}"; [ -n "$a" ] && export REDISCLI_AUTH="$a"; '
              'r() { redis-cli --no-auth-warning "$@"; }; ')
NEO4J_AUTH = 'NEO4J_USERNAME="${NEO4J_AUTH%%/*}" NEO4J_PASSWORD="${NEO4J_AUTH#*/}" '
