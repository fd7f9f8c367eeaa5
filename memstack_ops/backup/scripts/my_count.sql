SET SESSION group_concat_max_len = 16777216;
START TRANSACTION WITH CONSISTENT SNAPSHOT;
SELECT GROUP_CONCAT(CONCAT('SELECT ''', REPLACE(table_name, '''', ''''''), ''', COUNT(*) FROM `',
                           REPLACE(table_schema, '`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`')
                    SEPARATOR ' UNION ALL ')
  INTO @q FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE';
SET @q = IFNULL(@q, 'SELECT 1, 1 FROM DUAL WHERE FALSE');
PREPARE s FROM @q;
EXECUTE s;
COMMIT;
