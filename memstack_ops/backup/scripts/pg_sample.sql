SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres'; SET timezone = 'UTC'; SET extra_float_digits = 3;
SET bytea_output = 'hex'; SET lc_monetary = 'C';
SELECT 'sample|' || replace(replace(replace(format('%I.%I', n.nspname, c.relname), '\', '\\'), E'\n', '\n'),
                            E'\r', '\r') || '|' ||
       (xpath('/row/m/text()', query_to_xml(format(
           'SELECT md5(array_to_string(ARRAY(SELECT t::text FROM %I.%I t ORDER BY %s LIMIT 100), E''\n'')) AS m',
           n.nspname, c.relname, k.cols), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT string_agg(format('t.%I', a.attname), ', ' ORDER BY u.ord) AS cols
                    FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
                    WHERE i.indrelid = c.oid AND i.indisprimary) k
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' AND k.cols IS NOT NULL
ORDER BY 1;
-- one "sample|schema.table|md5" line per table with a primary key: the md5 of the text form of its
-- first 100 rows in primary-key order (an index scan that stops at 100 rows, never a sort of the
-- table), one row a line; names escaped as in pg_count.sql. The SETs make the text form the
-- same in every session (dates, intervals, time zones, floats, bytea, money); a table without a
-- primary key has no sample
