"""envfiles: template rendering, 0600 writing with backups, validation, masking."""

from __future__ import annotations

import os
import re
import stat

import pytest
from fakes import TEMPLATE, write

from memstack_ops import envfiles
from memstack_ops.envfiles import (
    EnvFileError,
    check_env,
    init_env,
    is_secret,
    mask,
    read_env,
    read_template,
    render,
    scrub,
    write_private,
)

URLSAFE32 = re.compile(r"^[A-Za-z0-9_-]{32}$")


def mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def tpl(tmp_path):
    return write(tmp_path, "env/memstack/.env.example", TEMPLATE)


def _values(text: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))


# --- render / read_template -------------------------------------------------------------------

def test_render_generates_secrets_only_for_keys_marked_generate(tpl):
    text, generated = render(tpl)
    vals = _values(text)
    assert generated == ["DB_PASSWORD", "API_TOKEN"]
    assert URLSAFE32.match(vals["DB_PASSWORD"]) and URLSAFE32.match(vals["API_TOKEN"])
    assert vals["DB_PASSWORD"] != vals["API_TOKEN"]
    assert vals["BIND_ADDRESS"] == "127.0.0.1" and vals["DB_USER"] == "app"
    assert vals["LLM_API_KEY"] == "" and vals["EXTRA_OPTS"] == ""


def test_render_gives_different_secrets_every_time(tpl):
    runs = [_values(render(tpl)[0])["DB_PASSWORD"] for _ in range(5)]
    assert len(set(runs)) == 5


def test_render_drops_the_markers_and_keeps_comments_and_blank_lines(tpl):
    text, _ = render(tpl)
    lines = text.splitlines()
    assert not any("#" in ln for ln in lines if not ln.startswith("#"))
    assert lines[0] == "# Example stack template"
    assert lines[1] == "# `# generate` values get strong secrets."  # a marker word inside a comment stays
    assert lines[2] == ""
    assert "LLM_API_KEY=" in lines and text.endswith("\n")


def test_render_applies_overrides_instead_of_generating(tpl):
    text, generated = render(tpl, {"DB_PASSWORD": "given-value-123456", "DB_USER": "bob"})
    vals = _values(text)
    assert vals["DB_PASSWORD"] == "given-value-123456" and vals["DB_USER"] == "bob"
    assert generated == ["API_TOKEN"]


def test_a_marker_needs_whitespace_before_it_so_a_hash_inside_a_value_is_kept(tmp_path):
    t = write(tmp_path, "t", "COLOR=#ff0000\nA=x#generate\nB=  #optional\n")
    text, generated = render(t)
    assert _values(text) == {"COLOR": "#ff0000", "A": "x#generate", "B": ""}
    assert generated == []
    keys = {k.key: k for k in read_template(t)}
    assert not keys["A"].generate and keys["B"].optional


def test_read_template_reports_optional_and_generate_flags_and_defaults(tpl):
    keys = {k.key: k for k in read_template(tpl)}
    assert list(keys) == ["BIND_ADDRESS", "DB_PASSWORD", "DB_USER", "API_TOKEN", "LLM_API_KEY", "EXTRA_OPTS"]
    assert (keys["DB_PASSWORD"].generate, keys["DB_PASSWORD"].optional) == (True, False)
    assert (keys["LLM_API_KEY"].generate, keys["LLM_API_KEY"].optional) == (False, True)
    assert (keys["DB_USER"].generate, keys["DB_USER"].optional, keys["DB_USER"].default) == (False, False, "app")


def test_read_template_understands_two_markers_quotes_and_export(tmp_path):
    t = write(tmp_path, "t", 'export A="quoted value"\nB=  # optional, generate\nC= # generate,optional\n')
    keys = {k.key: k for k in read_template(t)}
    assert keys["A"].default == "quoted value"
    assert keys["B"].generate and keys["B"].optional
    assert keys["C"].generate and keys["C"].optional


def test_read_template_on_a_missing_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(EnvFileError, match=r"is missing.*git checkout --"):
        read_template(tmp_path / "nope.example")


def test_generated_secret_is_32_url_safe_characters():
    s = {envfiles.generate_secret() for _ in range(20)}
    assert len(s) == 20 and all(URLSAFE32.match(v) for v in s)


# --- init_env / write_private -----------------------------------------------------------------

def test_init_env_writes_the_rendered_file_with_mode_0600(tmp_path, tpl):
    path = tmp_path / "env/memstack/.env"
    generated, backup = init_env(path, tpl)
    assert generated == ["DB_PASSWORD", "API_TOKEN"] and backup is None
    assert mode(path) == 0o600
    vals = read_env(path)
    assert URLSAFE32.match(vals["DB_PASSWORD"]) and vals["DB_USER"] == "app"
    assert not list(path.parent.glob(".*.tmp"))  # no temp file left behind


def test_init_env_refuses_to_overwrite_and_leaves_the_file_unchanged(tmp_path, tpl):
    path = write(tmp_path, "env/memstack/.env", "DB_PASSWORD=keep-me-please-1234\n", mode=0o600)
    with pytest.raises(EnvFileError) as e:
        init_env(path, tpl)
    assert "already exists" in str(e.value) and "--force" in str(e.value)
    assert path.read_text() == "DB_PASSWORD=keep-me-please-1234\n"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".env.bak")] == []


def test_init_env_force_keeps_a_timestamped_0600_backup_with_the_old_content(tmp_path, tpl):
    path = write(tmp_path, "env/memstack/.env", "DB_PASSWORD=old-secret-value-xyz\n", mode=0o644)
    generated, backup = init_env(path, tpl, force=True)
    assert backup is not None and backup.parent == path.parent
    assert re.fullmatch(r"\.env\.bak-\d{8}T\d{6}Z", backup.name)
    assert backup.read_text() == "DB_PASSWORD=old-secret-value-xyz\n"
    assert mode(backup) == 0o600  # the old file held secrets too, whatever its mode was
    assert mode(path) == 0o600
    assert URLSAFE32.match(read_env(path)["DB_PASSWORD"])
    assert generated == ["DB_PASSWORD", "API_TOKEN"]


def test_two_forced_inits_in_the_same_second_keep_the_original_file_somewhere(tmp_path, tpl, monkeypatch):
    monkeypatch.setattr(envfiles.time, "strftime", lambda fmt, t=None: "20250101T000000Z")
    path = write(tmp_path, "env/memstack/.env", "DB_PASSWORD=the-original-secret\n", mode=0o600)
    init_env(path, tpl, force=True)
    init_env(path, tpl, force=True)
    kept = [p.read_text() for p in path.parent.glob(".env.bak-*")]
    assert "DB_PASSWORD=the-original-secret\n" in kept


def test_init_env_with_a_missing_template_raises_env_file_error(tmp_path):
    with pytest.raises(EnvFileError):
        init_env(tmp_path / ".env", tmp_path / ".env.example")


def test_write_private_never_replaces_an_existing_file(tmp_path):
    p = write(tmp_path, "f", "old\n")
    with pytest.raises(EnvFileError, match="already exists"):
        write_private(p, "new\n")
    assert p.read_text() == "old\n"
    assert [q.name for q in tmp_path.iterdir()] == ["f"]


def test_write_private_creates_missing_parent_folders(tmp_path):
    p = tmp_path / "a" / "b" / ".env"
    write_private(p, "X=1\n")
    assert p.read_text() == "X=1\n" and mode(p) == 0o600


def test_write_private_survives_a_stale_temp_file_from_a_killed_run(tmp_path):
    write(tmp_path, f"..env.{os.getpid()}.tmp", "partial")
    write_private(tmp_path / ".env", "X=1\n")
    assert (tmp_path / ".env").read_text() == "X=1\n"


# --- read_env / check_syntax ------------------------------------------------------------------

def test_read_env_returns_values_with_dotenv_semantics(tmp_path):
    p = write(tmp_path, ".env", '# c\n\nA=1\nexport B="two words"\nC=\nD=x # trailing comment\nE=${A}\n')
    assert read_env(p) == {"A": "1", "B": "two words", "C": "", "D": "x", "E": "${A}"}


@pytest.mark.parametrize("line", ["JUST_A_WORD", "1KEY=value", "KEY: value", "my key=value"])
def test_a_malformed_line_raises_env_file_error_naming_file_and_line(tmp_path, line):
    p = write(tmp_path, ".env", f"# header\nGOOD=1\n{line}\nALSO_GOOD=2\n")
    with pytest.raises(EnvFileError) as e:
        read_env(p)
    assert f"{p}:3: not a KEY=VALUE line" in str(e.value)


def test_an_unreadable_env_file_raises_env_file_error(tmp_path):
    p = tmp_path / ".env"
    p.write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(EnvFileError, match="Cannot read .*UTF-8"):
        read_env(p)


def test_the_syntax_error_for_a_multiline_secret_does_not_echo_the_secret(tmp_path):
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj"
    p = write(tmp_path, ".env", f'PRIVATE_KEY="-----BEGIN KEY-----\n{body}\n-----END KEY-----"\n')
    try:
        values = read_env(p)
    except EnvFileError as e:
        assert body not in str(e)
    else:  # accepting the (valid) multi-line value is fine too
        assert body in values["PRIVATE_KEY"]


# --- check_env --------------------------------------------------------------------------------

GOOD = {"BIND_ADDRESS": "127.0.0.1", "DB_PASSWORD": "Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1",
        "DB_USER": "app", "API_TOKEN": "tok_4f8a9b2c7d1e6f3a", "LLM_API_KEY": "", "EXTRA_OPTS": ""}


def env_file(tmp_path, values: dict[str, str], file_mode: int = 0o600, drop: tuple[str, ...] = ()):
    text = "".join(f"{k}={v}\n" for k, v in values.items() if k not in drop)
    return write(tmp_path, "env/memstack/.env", text, mode=file_mode)


def by_key(findings):
    return {f.key: f for f in findings}


def test_a_complete_private_env_file_has_no_findings(tmp_path, tpl):
    values, findings = check_env(env_file(tmp_path, GOOD), tpl, "prod")
    assert findings == []
    assert values["DB_USER"] == "app"


def test_a_missing_required_key_is_an_error(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD, drop=("DB_USER",)), tpl, "dev")
    f = by_key(findings)["DB_USER"]
    assert f.level == "error" and f.message.startswith("missing: add DB_USER=")


def test_an_empty_required_value_is_an_error(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"DB_USER": ""}), tpl, "dev")
    f = by_key(findings)["DB_USER"]
    assert f.level == "error" and f.message.startswith("empty: set DB_USER")


def test_optional_keys_may_be_empty_or_absent(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD, drop=("EXTRA_OPTS",)), tpl, "prod")
    assert findings == []


def test_keys_not_in_the_template_are_accepted(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"MY_OWN": "x"}), tpl, "prod")
    assert findings == []


@pytest.mark.parametrize("weak", ["123456", "neo4j123", "password", "Password", "CHANGEME", "admin123"])
@pytest.mark.parametrize("stage, level", [("dev", "warn"), ("staging", "warn"), ("prod", "error")])
def test_known_default_passwords_are_warnings_outside_prod_and_errors_in_prod(tmp_path, tpl, weak, stage, level):
    _, findings = check_env(env_file(tmp_path, GOOD | {"DB_PASSWORD": weak}), tpl, stage)
    f = by_key(findings)["DB_PASSWORD"]
    assert f.level == level and "known default password" in f.message


def test_a_weak_secret_finding_never_repeats_the_value(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"DB_PASSWORD": "neo4j123", "API_TOKEN": "zq81"}), tpl, "prod")
    assert {f.key for f in findings} == {"DB_PASSWORD", "API_TOKEN"}
    assert not any("neo4j123" in f.message or "zq81" in f.message for f in findings)


@pytest.mark.parametrize("stage, level", [("dev", "warn"), ("prod", "error")])
def test_short_secrets_are_warnings_outside_prod_and_errors_in_prod(tmp_path, tpl, stage, level):
    _, findings = check_env(env_file(tmp_path, GOOD | {"API_TOKEN": "q7Zr2mX9k"}), tpl, stage)  # 11 chars
    f = by_key(findings)["API_TOKEN"]
    assert f.level == level and "shorter than 12 characters" in f.message


def test_a_twelve_character_secret_is_long_enough(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"API_TOKEN": "q7Zr2mX9kLp4"}), tpl, "prod")
    assert findings == []


def test_weak_values_of_keys_that_are_not_secrets_are_not_flagged(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"DB_USER": "postgres"}), tpl, "prod")
    assert findings == []


@pytest.mark.parametrize("file_mode", [0o640, 0o604, 0o644])
def test_a_group_or_world_readable_env_file_gives_a_chmod_warning(tmp_path, tpl, file_mode):
    _, findings = check_env(env_file(tmp_path, GOOD, file_mode=file_mode), tpl, "prod")
    assert len(findings) == 1
    f = findings[0]
    assert f.level == "warn" and f"has mode {file_mode:o}" in f.message and "chmod 600" in f.message


def test_check_env_on_a_missing_file_says_env_init(tmp_path, tpl):
    with pytest.raises(EnvFileError, match=r"is missing: create it with `inv env.init`"):
        check_env(tmp_path / "env/memstack/.env", tpl, "dev")


def test_check_env_on_a_malformed_file_names_the_line(tmp_path, tpl):
    p = write(tmp_path, "env/memstack/.env", "DB_USER=app\nnot a line\n", mode=0o600)
    with pytest.raises(EnvFileError, match=r"\.env:2: not a KEY=VALUE line"):
        check_env(p, tpl, "dev")


def test_a_freshly_initialised_file_passes_the_prod_check(tmp_path, tpl):
    # every required value without a default is generated, so only keys the template fills pass
    path = tmp_path / "env/memstack/.env"
    init_env(path, tpl)
    _, findings = check_env(path, tpl, "prod")
    assert findings == []


# --- mask / scrub -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["NEO4J_PASSWORD", "DB_PASSWD", "JWT_SECRET", "GITHUB_TOKEN", "OPENAI_API_KEY",
                                 "SSH_PRIVATE_KEY", "NEO4J_AUTH", "AUTH_HEADER", "postgres_password"])
def test_secret_keys_are_recognised(key):
    assert is_secret(key)


@pytest.mark.parametrize("key", ["POSTGRES_USER", "BIND_ADDRESS", "API_PORT", "LOG_LEVEL", "HOST"])
def test_ordinary_keys_are_not_secrets(key):
    assert not is_secret(key)


def test_mask_hides_secret_values_and_shows_the_rest():
    assert mask("DB_PASSWORD", "hunter2-and-more") == "****"
    assert mask("DB_USER", "app") == "app"
    assert mask("DB_PASSWORD", "") == "<empty>"
    assert mask("DB_USER", "") == "<empty>"


def test_mask_never_returns_any_part_of_a_secret():
    for _ in range(20):
        v = envfiles.generate_secret()
        assert v not in mask("API_TOKEN", v) and mask("API_TOKEN", v) == "****"


def test_scrub_replaces_every_occurrence_of_every_secret_value():
    secrets = {"DB_PASSWORD": "s3cr3t-pw-value", "API_TOKEN": "tok-abcdef", "DB_USER": "app"}
    text = "login app/s3cr3t-pw-value failed; retry with s3cr3t-pw-value and tok-abcdef"
    out = scrub(text, secrets)
    assert out == "login app/**** failed; retry with **** and ****"


def test_scrub_replaces_the_longest_secret_first_so_no_tail_of_a_longer_one_leaks():
    secrets = {"SHORT_SECRET": "abcd", "LONG_SECRET": "abcd-efgh-ijkl"}
    out = scrub("uri=abcd-efgh-ijkl other=abcd", secrets)
    assert out == "uri=**** other=****"
    assert "efgh" not in out and "ijkl" not in out


def test_scrub_leaves_non_secret_values_and_very_short_secrets_alone():
    out = scrub("user app, pin 123, level INFO", {"DB_USER": "app", "PIN_SECRET": "123", "LOG_LEVEL": "INFO"})
    assert out == "user app, pin 123, level INFO"


def test_scrub_never_leaks_a_generated_secret():
    values = {f"K{i}_PASSWORD": envfiles.generate_secret() for i in range(10)}
    text = " | ".join(f"{k}={v}" for k, v in values.items())
    out = scrub(text, values)
    assert not any(v in out for v in values.values())
    assert out.count("****") == 10


# --- issue 12 M4: secrets recognised by a wider name pattern, by value shape, inside URLs -----

@pytest.mark.parametrize("key", ["DB_PASS", "SMTP_PWD", "MAIL_PASSPHRASE", "MYSQLPASSWORD", "AWS_SECRET_ACCESS_KEY",
                                 "SESSION_KEY", "ENCRYPTION_KEY", "SENTRY_DSN", "GOOGLE_CREDENTIALS", "OAUTH_TOKEN",
                                 "REDIS_PW", "NEO4J_AUTH"])
def test_the_wider_pattern_recognises_secret_keys(key):
    assert is_secret(key)


@pytest.mark.parametrize("key, value", [
    ("ACCESS_TOKEN_EXPIRE_MINUTES", "30"), ("REQUIRE_API_KEY", "false"), ("JWT_TOKEN_TTL", "1h30m"),
    ("SESSION_TOKEN", "3600"), ("POSTGRES_HOST_AUTH_METHOD", "trust"), ("POSTGRES_PASSWORD_FILE", "/run/secrets/pg"),
    ("ALLOW_EMPTY_PASSWORD", "yes"), ("MINIO_ACCESS_KEY", "memos"), ("AUTH_URL", "http://auth:8080/login"),
    ("NEO4J_AUTH", "none"), ("API_TOKEN", "${OTHER_TOKEN}"),
])
def test_settings_about_secrets_are_not_secrets_by_their_value_shape(key, value):
    assert not is_secret(key, value)
    assert mask(key, value) == value


def test_a_password_key_is_a_secret_whatever_its_shape():
    assert is_secret("MYSQL_ROOT_PASSWORD", "123456") and mask("MYSQL_ROOT_PASSWORD", "123456") == "****"


@pytest.mark.parametrize("key, value, shown", [
    ("DATABASE_URL", "postgresql://memstack:hunter2-very-secret@postgres:5432/memstack",
     "postgresql://memstack:****@postgres:5432/memstack"),
    ("REDIS_URL", "redis://:hunter3-very-secret@redis:6379/0", "redis://:****@redis:6379/0"),
    ("SENTRY_DSN", "https://0123456789abcdef@o1.ingest.example/1", "https://****@o1.ingest.example/1"),
    ("API_URL", "http://api:8000/v1", "http://api:8000/v1"),
])
def test_mask_hides_the_password_of_a_url_and_keeps_the_rest_readable(key, value, shown):
    assert mask(key, value) == shown


def test_mask_hides_a_value_that_is_a_secret_elsewhere():
    values = {"DB_PASS": "hunter4-very-secret", "BACKUP_NOTE": "hunter4-very-secret", "PGURL": "x hunter4-very-secret"}
    found = envfiles.secret_values(values)
    assert mask("BACKUP_NOTE", values["BACKUP_NOTE"], found) == "****"
    assert mask("PGURL", values["PGURL"], found) == "x ****"


def test_scrub_masks_the_new_kinds_of_secrets_in_free_text():
    values = {"DB_PASS": "hunter4-very-secret", "SMTP_PWD": "hunter5-very-secret",
              "DATABASE_URL": "postgresql://memstack:hunter2-very-secret@postgres:5432/memstack",
              "ACCESS_TOKEN_EXPIRE_MINUTES": "3600"}
    out = scrub("auth hunter2-very-secret / hunter4-very-secret / hunter5-very-secret; token lives 3600 s", values)
    assert out == "auth **** / **** / ****; token lives 3600 s"


def test_scrub_masks_the_password_of_any_url_in_the_text():
    assert scrub("cannot reach redis://:abc123xyz@cache:6379/0", {}) == "cannot reach redis://:****@cache:6379/0"


# --- issue 12 M3: the forms compose prints a secret in, and secrets written in compose files ----

@pytest.mark.parametrize("secret, rendered", [
    ("Sup3r$ecretPassw0rd", "POSTGRES_PASSWORD: Sup3r$$ecretPassw0rd"),  # compose doubles `$`
    ("it's: a #secret", "X: 'it''s: a #secret'"),  # YAML single-quoted scalar
    ('q"uo\\te-secret', '"X": "q\\"uo\\\\te-secret"'),  # JSON string
])
def test_scrub_masks_a_secret_in_the_form_compose_prints_it(secret, rendered):
    out = scrub(rendered, {"DB_PASSWORD": secret})
    assert "****" in out and "ecret" not in out.split(":", 1)[1]


PROBE_MODEL = {"services": {
    "cache": {"command": ["redis-server", "--requirepass", "lit$$eral-pass-123", "--port", "6379"],
              "environment": {"DB_PASSWORD": "in-file-secret-xyz", "DATABASE_URL": "postgres://u:urlpw-123456@db/x",
                              "LOG_LEVEL": "INFO", "TOKEN_TTL": "3600"},
              "healthcheck": {"test": ["CMD-SHELL", "redis-cli -a 'hc-pass-9876' ping && mkdir -p /data"]}},
    "db": {"healthcheck": {"test": ["CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "-uroot",
                                    "-p$$MYSQL_ROOT_PASSWORD"]},
           "entrypoint": ["sh", "-c", "mysqladmin -uroot -pmy-entry-pass1 status"]},
    "pg": {"healthcheck": {"test": ["CMD-SHELL", "pg_isready -h 127.0.0.1 -p 5432"]},
           "command": ["curl", "-u", "admin:curl-pass-42", "http://x"]},
}}


def test_model_secrets_finds_passwords_written_in_the_compose_file_and_nothing_else():
    assert envfiles.model_secrets(PROBE_MODEL) == {
        "lit$eral-pass-123", "in-file-secret-xyz", "urlpw-123456", "hc-pass-9876", "my-entry-pass1", "curl-pass-42"}


# --- issue 12: the prod check reads every env file compose reads, every key, by value shape ---

def test_the_prod_check_reads_the_stage_file_that_compose_reads_last(tmp_path, tpl):
    main = env_file(tmp_path, GOOD)
    stage = write(tmp_path, "env/memstack/.env.prod", "DB_PASSWORD=123456\n", mode=0o600)
    values, findings = check_env([main, stage], tpl, "prod")
    f = by_key(findings)["DB_PASSWORD"]
    assert values["DB_PASSWORD"] == "123456"
    assert f.level == "error" and "in .env.prod" in f.message and "123456" not in f.message


def test_the_prod_check_also_checks_secrets_the_template_does_not_list(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"SMTP_PASSWORD": "changeme"}), tpl, "prod")
    assert by_key(findings)["SMTP_PASSWORD"].level == "error"


def test_the_prod_check_flags_a_weak_password_inside_a_url_without_echoing_it(tmp_path, tpl):
    _, findings = check_env(env_file(tmp_path, GOOD | {"DATABASE_URL": "postgresql://app:postgres@db/app"}), tpl,
                            "prod")
    f = by_key(findings)["DATABASE_URL"]
    assert f.level == "error" and "known default password" in f.message and "postgres@" not in f.message


def test_the_prod_check_accepts_an_upstream_files_settings_about_secrets(tmp_path, tpl):
    upstream = {"ACCESS_TOKEN_EXPIRE_MINUTES": "30", "REQUIRE_API_KEY": "false", "JWT_TOKEN_TTL": "15m",
                "POSTGRES_HOST_AUTH_METHOD": "scram-sha-256", "REDIS_URL": "redis://redis:6379/0",
                "MINIO_ACCESS_KEY": "memos"}
    _, findings = check_env(env_file(tmp_path, GOOD | upstream), tpl, "prod")
    assert findings == []


@pytest.mark.parametrize("template", sorted(str(p) for p in __import__("pathlib").Path(__file__).resolve()
                                           .parents[2].glob("env/*/*.example")))
def test_every_shipped_template_initialises_to_a_file_that_passes_the_prod_check(tmp_path, template):
    from pathlib import Path

    path = tmp_path / "env"
    init_env(path, Path(template))
    assert check_env(path, Path(template), "prod")[1] == []
