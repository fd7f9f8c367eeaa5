#!/bin/bash
set -euo pipefail
# *_FILE, as the official images' file_env: VAR_FILE names a file whose content becomes VAR (a Swarm
# or compose secret under /run/secrets); both set is an error. Read as root, before mariadbd drops
# to mysql (the secret file may be 0400 root).
file_env() {
  local var=$1 file_var="$1_FILE"
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$file_var"; exit 1
  fi
  if [ -n "${!file_var:-}" ]; then
    export "$var"="$(<"${!file_var}")"
    unset "$file_var"
  fi
}
for p in MYSQL MARIADB; do
  for k in ROOT_PASSWORD PASSWORD USER DATABASE ROOT_HOST; do file_env "${p}_$k"; done
done
root_pw=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
db=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
user=${MARIADB_USER:-${MYSQL_USER:-}}
pw=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
case "${1:-}" in -*) set -- mariadbd "$@" ;; esac  # `--option` arguments, as the official images take
case "${1:-}" in mysqld|mariadbd) ;; *) exec "$@" ;; esac
shift
chown -R mysql:mysql /var/lib/mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  : "${root_pw:?MYSQL_ROOT_PASSWORD or MARIADB_ROOT_PASSWORD must be set}"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=normal >/dev/null
  setpriv --reuid=mysql --regid=mysql --init-groups mariadbd --skip-networking --socket=/run/mysqld/mysqld.sock &
  pid=$!
  for _ in $(seq 1 60); do mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1 && break; sleep 0.5; done
  {
    printf "ALTER USER 'root'@'localhost' IDENTIFIED BY '%s';\n" "$root_pw"
    printf "CREATE USER IF NOT EXISTS 'root'@'%%' IDENTIFIED BY '%s'; GRANT ALL ON *.* TO 'root'@'%%' WITH GRANT OPTION;\n" "$root_pw"
    [ -n "$db" ] && printf 'CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n' "$db"
    if [ -n "$user" ] && [ -n "$pw" ]; then
      printf "CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s';\n" "$user" "$pw"
      [ -n "$db" ] && printf 'GRANT ALL ON `%s`.* TO '"'"'%s'"'"'@'"'"'%%'"'"';\n' "$db" "$user"
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb --socket=/run/mysqld/mysqld.sock -uroot
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) MYSQL_PWD="$root_pw" mariadb --socket=/run/mysqld/mysqld.sock -uroot ${db:+"$db"} <"$f" ;;
      *.sh) . "$f" ;;
    esac
  done
  kill "$pid"; wait "$pid" || true
fi
exec setpriv --reuid=mysql --regid=mysql --init-groups mariadbd --bind-address=0.0.0.0 --socket=/run/mysqld/mysqld.sock "$@"
