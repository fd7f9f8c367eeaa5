-- Create the database :"new" like :"live" (owner, encoding, locale and its provider, tablespace,
-- connection limit), from template0 as pg_restore wants, then give it the live one's grants,
-- settings (ALTER DATABASE / ALTER ROLE IN DATABASE ... SET) and comment: a dump made without
-- --create holds none of these, so the restored database keeps what the live one has.
-- Run by psql (-v live=... -v new=...) in a maintenance database; every statement through \gexec.
SELECT format('CREATE DATABASE %I WITH TEMPLATE template0 OWNER %I ENCODING %L LC_COLLATE %L LC_CTYPE %L',
              :'new', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype)
       || CASE j->>'datlocprovider'
            WHEN 'i' THEN format(' LOCALE_PROVIDER icu ICU_LOCALE %L',
                                 coalesce(j->>'daticulocale', j->>'datlocale'))
                          || coalesce(format(' ICU_RULES %L', j->>'daticurules'), '')
            WHEN 'b' THEN format(' LOCALE_PROVIDER builtin BUILTIN_LOCALE %L', j->>'datlocale')
            ELSE '' END
       || CASE WHEN t.spcname <> 'pg_default' THEN format(' TABLESPACE %I', t.spcname) ELSE '' END
       || format(' CONNECTION LIMIT %s', d.datconnlimit)
FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace, LATERAL to_jsonb(d) j
WHERE d.datname = :'live' \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'new')
FROM pg_database WHERE datname = :'live' AND datacl IS NOT NULL \gexec
SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, :'new',
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = :'live' \gexec
-- a list setting (search_path ...) is stored as the SQL that sets it; any other as a plain value
-- (the same split pg_dump makes)
SELECT CASE WHEN s.setrole = 0 THEN format('ALTER DATABASE %I SET ', :'new')
            ELSE format('ALTER ROLE %I IN DATABASE %I SET ', pg_get_userbyid(s.setrole), :'new') END
       || quote_ident(split_part(c, '=', 1)) || ' TO '
       || CASE WHEN lower(split_part(c, '=', 1)) IN ('local_preload_libraries', 'search_path',
                    'session_preload_libraries', 'shared_preload_libraries', 'temp_tablespaces',
                    'unix_socket_directories')
               THEN substr(c, strpos(c, '=') + 1) ELSE quote_literal(substr(c, strpos(c, '=') + 1)) END
FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c
WHERE d.datname = :'live' \gexec
SELECT format('COMMENT ON DATABASE %I IS %L', :'new', shobj_description(oid, 'pg_database'))
FROM pg_database WHERE datname = :'live' AND shobj_description(oid, 'pg_database') IS NOT NULL \gexec
