SELECT GROUP_CONCAT(CONCAT(
         'SELECT ''sample'', ''', REPLACE(t.table_name, '''', ''''''), ''', MD5(IFNULL(GROUP_CONCAT(m ORDER BY ',
         k.ord, ' SEPARATOR ''''), '''')) FROM (SELECT ', k.sel, ', MD5(CONCAT_WS('','', ', c.cols, ')) AS m FROM `',
         REPLACE(t.table_schema, '`', '``'), '`.`', REPLACE(t.table_name, '`', '``'), '` ORDER BY ', k.src,
         ' LIMIT 100) AS s') SEPARATOR ' UNION ALL ')
  INTO @q
  FROM information_schema.tables t
  JOIN (SELECT table_name, GROUP_CONCAT(CONCAT('QUOTE(CAST(`', REPLACE(column_name, '`', '``'), '` AS BINARY))')
                                        ORDER BY ordinal_position SEPARATOR ', ') AS cols
          FROM information_schema.columns WHERE table_schema = DATABASE() GROUP BY table_name) c
    ON c.table_name = t.table_name
  JOIN (SELECT table_name,
               GROUP_CONCAT(CONCAT('`', REPLACE(column_name, '`', '``'), '` AS k', seq_in_index)
                            ORDER BY seq_in_index SEPARATOR ', ') AS sel,
               GROUP_CONCAT(CONCAT('k', seq_in_index) ORDER BY seq_in_index SEPARATOR ', ') AS ord,
               GROUP_CONCAT(CONCAT('`', REPLACE(column_name, '`', '``'), '`') ORDER BY seq_in_index SEPARATOR ', ')
                 AS src
          FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = 'PRIMARY'
         GROUP BY table_name) k
    ON k.table_name = t.table_name
 WHERE t.table_schema = DATABASE() AND t.table_type = 'BASE TABLE';
SET @q = IFNULL(@q, 'SELECT 1, 1, 1 FROM DUAL WHERE FALSE');
PREPARE s FROM @q;
EXECUTE s;
-- one "sample<TAB>table<TAB>md5" row per table with a primary key, in the snapshot of my_count.sql
-- (inserted before its COMMIT): the md5 of the md5s of its first 100 rows in primary-key order
-- (InnoDB reads them from the clustered index and stops: never a sort of the table), each row its
-- columns QUOTE()d as binary strings (NULL apart from 'NULL', no collation mix). No sample for a
-- table without a primary key
