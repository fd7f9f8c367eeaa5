"""MySQL and MariaDB: everything memstack-ops knows about this kind, for ``db.*`` and the backups.

Shell text here runs inside the database's own container with ``sh -c SCRIPT sh ARGS...``:
names travel as positional parameters (``"$1"``), never pasted into the script, and the
password comes from the container's environment, never argv.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .spec import TABLE, Password, no_auth_input, quote, sh_ready

if TYPE_CHECKING:
    from ..db import Db, Migration

NAME = "mysql"
NEEDLES: tuple[str, ...] = ("mariadb", "mysql")  # substrings of an image's repository name
MIGRATION_EXT: str | None = "sql"
CONTENTS: tuple[str, str] | None = None  # status shows migrations instead

# THE auth prelude (db.* and backups), the one MySQL option-file writer. Who: root when a root
# password is set, else MYSQL_USER/MYSQL_PASSWORD (MARIADB_* too); each *_FILE variable, when set
# and readable, replaces its variable (as the official images read them). The values go into a
# 0600 mktemp file, double-quoted with \ and " escaped and a newline written as \n: the client's
# option parser then reads them back byte for byte (# ; ' $ spaces and a literal "\n" included).
# Leaves the option file's path in $f (removed on exit: callers must not `exec`), the client in
# $cli, the dump tool in $dump, and $_anon set when no password was found.
AUTH = (r'''f=$(mktemp) || exit 1; trap 'rm -f "$f"' EXIT; '''
        r'''_p=${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}; '''
        r'''_pf=${MYSQL_ROOT_PASSWORD_FILE:-${MARIADB_ROOT_PASSWORD_FILE:-}}; '''
        r'''if [ -n "$_pf" ] && [ -r "$_pf" ]; then _p=$(cat "$_pf"); fi; _u=root; '''
        r'''if [ -z "$_p" ]; then _u=${MYSQL_USER:-${MARIADB_USER:-root}}; '''
        r'''_p=${MYSQL_PASSWORD:-${MARIADB_PASSWORD:-}}; '''
        r'''_pf=${MYSQL_PASSWORD_FILE:-${MARIADB_PASSWORD_FILE:-}}; '''
        r'''if [ -n "$_pf" ] && [ -r "$_pf" ]; then _p=$(cat "$_pf"); fi; fi; _anon=; [ -n "$_p" ] || _anon=1; '''
        r'''_nl=$(printf '\nx'); _nl=${_nl%x}; '''
        r'''_myq() { _s=$1; _o=; while [ -n "$_s" ]; do _c=${_s%"${_s#?}"}; _s=${_s#?}; '''
        r'''case $_c in \\|\") _o="$_o\\$_c";; "$_nl") _o="$_o\\n";; *) _o="$_o$_c";; esac; done; }; '''
        r'''_myq "$_u"; _u=$_o; _myq "$_p"; '''
        r'''printf '[client]\nuser="%s"\npassword="%s"\n' "$_u" "$_o" > "$f" || exit 1; _p=; _o=; '''
        r'''cli=$(command -v mariadb || command -v mysql); dump=$(command -v mariadb-dump || command -v mysqldump); ''')
# $1 is the database ("" = none). Not `exec`: the EXIT trap removes the option file.
_CONNECT = '"$cli" --defaults-extra-file="$f" -h127.0.0.1'
_DATABASE = ' ${1:+"--database=$1"}'
CLIENT = AUTH + _CONNECT + " --batch --skip-column-names" + _DATABASE  # SQL on stdin
SHELL = AUTH + _CONNECT + _DATABASE  # interactive (db.shell)
# SELECT 1 over TCP, on the server (its database may not exist yet). An image that made a random
# root password nobody knows (and no user): the server's own answer to mysqladmin ping over TCP
# (exit 0 even for "Access denied").
READY = AUTH + (r'''if [ -n "$_anon" ] && '''
                r'''[ -n "${MYSQL_RANDOM_ROOT_PASSWORD:-${MARIADB_RANDOM_ROOT_PASSWORD:-}}" ] && '''
                r'''adm=$(command -v mariadb-admin || command -v mysqladmin); then '''
                r'''"$adm" ping -h127.0.0.1 --connect-timeout=5; exit; fi; '''
                r'''[ -n "$cli" ] || { echo "no mysql client in the container" >&2; exit 127; }; '''
                + _CONNECT + " --connect-timeout=5 --batch --skip-column-names -e 'SELECT 1'")
PASSWORD = Password(("MYSQL_ROOT_PASSWORD", "MARIADB_ROOT_PASSWORD", "MYSQL_PASSWORD", "MARIADB_PASSWORD"),
                    refused=re.compile(r"Access denied for user", re.IGNORECASE),
                    missing=re.compile(r"\(using password: NO\)"),
                    where="MYSQL_ROOT_PASSWORD, or MYSQL_USER and MYSQL_PASSWORD (MARIADB_* too, or *_FILE), in its "
                          "environment")


def ident(name: str) -> str:
    return quote(name, "`")


def literal(text: str) -> str:
    return quote(text, "'", backslash=True)  # \ escapes in MySQL strings (unless NO_BACKSLASH_ESCAPES)


def database(env: Mapping[str, str]) -> str:
    return env.get("MYSQL_DATABASE") or env.get("MARIADB_DATABASE") or ""


ready = sh_ready(READY)
auth_input = no_auth_input


def ensure(db: Db) -> list[str]:
    name = db.database
    if not name:
        return ["no MYSQL_DATABASE set: nothing to create"]
    r = db.exec(f"SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
                f"WHERE SCHEMA_NAME = {literal(name)};", database="")
    if r.failed:
        raise db.fail("Checking databases", r)
    charset = r.stdout.strip()
    if not charset:
        r = db.exec(f"CREATE DATABASE IF NOT EXISTS {ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;",
                    database="")
        if r.failed:
            raise db.fail(f"Creating database {name}", r)
        return [f"created database {name} (utf8mb4)"]
    if charset != "utf8mb4":
        r = db.exec(f"ALTER DATABASE {ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;", database="")
        if r.failed:
            raise db.fail(f"Setting utf8mb4 on {name}", r)
        return [f"database {name} was {charset}: default character set changed to utf8mb4 "
                f"(existing tables keep theirs)"]
    return []


def applied(db: Db) -> list[list[str]]:
    """Rows of the migrations table: track, version, name, checksum, applied_at, duration_ms, state."""
    r = db.exec(f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                f"AND TABLE_NAME = '{TABLE}';\n")
    if r.ok and r.stdout.strip() == "1":
        r = db.exec(f"SELECT track, version, name, checksum, DATE_FORMAT(applied_at, '%Y-%m-%dT%H:%i:%sZ'), "
                    f"IFNULL(duration_ms, ''), state FROM {TABLE} ORDER BY track, version;\n")
    if r.failed:
        raise db.fail("Reading applied migrations", r)
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()] if r.stdout.strip() != "0" else []


def apply(db: Db, pending: list[Migration], root: Path) -> list[str]:
    """MySQL DDL is not transactional: each migration is marked 'running' first (the table's
    primary key stops a concurrent run), then marked applied. GET_LOCK serialises runs."""
    lines = [(f"CREATE TABLE IF NOT EXISTS {TABLE} (track VARCHAR(16) NOT NULL, version INT NOT NULL, "
             f"name VARCHAR(255) NOT NULL, checksum CHAR(64) NOT NULL, applied_at DATETIME(6) NOT NULL, "
             f"duration_ms INT NULL, state VARCHAR(16) NOT NULL DEFAULT 'running', PRIMARY KEY (track, version)) "
             f"CHARACTER SET utf8mb4;"),
             "SELECT GET_LOCK('memstack-ops migrate', 300) INTO @got;",
             "DO IF(@got = 1, 1, (SELECT 1 UNION SELECT 2));"]  # aborts the script when the lock timed out
    starts: list[tuple[int, Migration]] = []
    for m in pending:
        lines += [f"SELECT 'memstack-ops:begin {m.track} {m.version}';",
                  (f"INSERT INTO {TABLE} (track, version, name, checksum, applied_at, state) "
                   f"VALUES ({literal(m.track)}, {m.version}, {literal(m.name)}, {literal(m.checksum)}, "
                   f"UTC_TIMESTAMP(6), 'running');"),
                  "SET @t0 = NOW(6);"]
        starts.append((len(lines) + 1, m))
        lines += m.text.splitlines()
        lines += [(f"UPDATE {TABLE} SET state = 'applied', "
                   f"duration_ms = TIMESTAMPDIFF(MICROSECOND, @t0, NOW(6)) DIV 1000 "
                   f"WHERE track = {literal(m.track)} AND version = {m.version};"),
                  f"SELECT 'memstack-ops:applied {m.track} {m.version}';"]
    r = db.exec("\n".join(lines) + "\n")
    done = re.findall(r"memstack-ops:applied (\w+) (\d+)", r.stdout)
    if r.failed:
        if f"for key '{TABLE}.PRIMARY'" in r.stderr or ("Duplicate entry" in r.stderr and TABLE in r.stderr) or \
                "Duplicate entry" in r.stderr and "PRIMARY" in r.stderr:
            return [f"{t} {int(v):04d}" for t, v in done]  # the rest was applied by a concurrent run
        began = re.findall(r"memstack-ops:begin (\w+) (\d+)", r.stdout)
        failed = next((m for _, m in starts if began and (m.track, str(m.version)) == began[-1]), None)
        if failed is not None:  # let a fixed file run again; say what may be left behind
            db.exec(f"DELETE FROM {TABLE} WHERE track = {literal(failed.track)} AND version = {failed.version} "
                    f"AND state = 'running';")
        raise db.migration_error(r, failed, starts, root, "MySQL DDL is not transactional: statements of this file "
                                                     "before the failing one stay applied")
    return [f"{t} {int(v):04d}" for t, v in done]
