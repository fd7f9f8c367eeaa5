SELECT 'count|' || replace(replace(replace(format('%I.%I', n.nspname, c.relname), '\', '\\'), E'\n', '\n'),
                           E'\r', '\r') || '|' ||
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname),
                                            false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1;
-- one "count|schema.table|n" line per table; a newline or carriage return in a name is written
-- as \n or \r (and a backslash doubled), so that each table stays on one line
