# shellcheck disable=SC2154  # cli (the client) and f (its 0600 option file) come from the MY_AUTH prelude
# Load a dump of one database (mysqldump --databases, on stdin) into ANOTHER database: the restore
# beside the live one. $1 the dump's database and $2 the one to load into, both as quoted
# identifiers (`name`); further arguments go to the client. Only the dump's own lines that name
# its database are rewritten (its DROP DATABASE, CREATE DATABASE and USE lines, whole-line
# matches); any other line of that shape stops the load before the client sees it, so nothing of
# the dump can reach the live database. Events are left out of this load (a copy's events would
# run on the scheduler); a dump that holds any says "memstack-ops-has: events" on stderr.
# The client runs in its safe mode, as mysql_load.sh explains.
command -v awk >/dev/null || { echo "memstack-ops-noawk: no awk in the container" >&2; exit 4; }
if "$cli" --help 2>/dev/null | grep -q -e '--sandbox'; then safe=--sandbox; else safe=--binary-mode; fi
FROM=$1 TO=$2; export FROM TO; shift 2
rcf=$(mktemp) || exit 1
trap 'rm -f "$f" "$rcf"' EXIT
{
  awk '
    BEGIN { from = ENVIRON["FROM"]; to = ENVIRON["TO"]; cd = "CREATE DATABASE /*!32312 IF NOT EXISTS*/ " from }
    /^-- Dumping events for database / { ev = 1; print; next }
    /^-- Dumping routines for database / || /^-- Current Database: / || /^-- Final view structure/ { ev = 0 }
    ev { if ($0 ~ / EVENT /) seen = 1; next }
    $0 == "/*!40000 DROP DATABASE IF EXISTS " from "*/;" { print "/*!40000 DROP DATABASE IF EXISTS " to "*/;"; next }
    index($0, cd) == 1 && (substr($0, length(cd) + 1, 1) == " " || substr($0, length(cd) + 1, 1) == ";") {
      print "CREATE DATABASE /*!32312 IF NOT EXISTS*/ " to substr($0, length(cd) + 1); next }
    $0 == "USE " from ";" { print "USE " to ";"; next }
    /^USE / || /^CREATE DATABASE/ || /^\/\*!40000 DROP DATABASE/ || /^DROP DATABASE/ {
      print "memstack-ops-refused: line " NR " names another database: " substr($0, 1, 200) > "/dev/stderr"; bad = 1; exit 3 }
    { print }
    END { if (seen && !bad) print "memstack-ops-has: events" > "/dev/stderr" }'
  echo $? > "$rcf"
} | "$cli" --defaults-extra-file="$f" "$safe" "$@"
c=$?
rc=$(cat "$rcf")
[ "${rc:-1}" = 0 ] || exit "${rc:-1}"
exit $c
