"""swarm_secrets.py: env secrets of a Swarm stack become Swarm secrets named by content hash, read
through the images' *_FILE variables; no value in the stack file, the notes or the plan's repr
(issue 15)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from fakes import make_stack

from memstack_ops.compose import Compose
from memstack_ops.envfiles import env_secret, read_template
from memstack_ops.errors import ConfigError
from memstack_ops.swarm_render import render
from memstack_ops.swarm_secrets import FILES_LABEL, SecretPlan, prune, secret_name

REPO = Path(__file__).resolve().parents[2]
ENGINE_NAME = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?")  # moby's rule for secret names


def known(key: str, n: int = 1) -> str:
    return f"Swarm-Test-{key}-{n}-9c2e41$x"  # a `$` too: compose escapes it, the secret file must not


def memstack_model(tmp_path: Path, n: int = 1, opt_in: bool = True, fix_reads: bool = True) -> dict:
    """The memstack stack's compose model (``docker compose config``, no engine), a known value
    per generated secret; ``opt_in``: the app, redis and neo4j services labelled as reading *_FILE
    (what their operator would do after making their images read the files); ``fix_reads``: and
    redis's entrypoint and healthcheck and neo4j's healthcheck read the files, not the variables."""
    from invoke import Context

    env = tmp_path / f"memstack-{n}.env"
    env.write_text("".join(f"{k.key}='{known(k.key, n) if k.generate else k.default}'\n"
                           for k in read_template(REPO / "env/memstack/.env.example")))
    st = make_stack(REPO, project="memstack", env_files=(str(env),))
    m = Compose(st).model(Context())
    if opt_in:
        for name in ("api", "worker", "redis", "neo4j"):
            m["services"][name].setdefault("labels", {})[FILES_LABEL] = "*"
    if opt_in and fix_reads:
        redis, neo4j = m["services"]["redis"], m["services"]["neo4j"]
        redis["entrypoint"][-1] = redis["entrypoint"][-1].replace('"$$REDIS_PASSWORD"',
                                                                  '"$$(cat "$$REDIS_PASSWORD_FILE")"')
        redis["healthcheck"]["test"] = ["CMD-SHELL", 'REDISCLI_AUTH="$$(cat "$$REDISCLI_AUTH_FILE")" redis-cli ping']
        test = neo4j["healthcheck"]["test"]
        neo4j["healthcheck"]["test"] = [test[0], test[1].replace("$${NEO4J_AUTH#*/}", "$$(cut -d/ -f2- "
                                                                 '"$$NEO4J_AUTH_FILE")')]
        assert "REDIS_PASSWORD_FILE" in redis["entrypoint"][-1]  # the compose file still reads what it did
        assert "NEO4J_AUTH_FILE" in neo4j["healthcheck"]["test"][1]
    return m


def values(n: int = 1) -> set[str]:
    keys = [k.key for k in read_template(REPO / "env/memstack/.env.example") if k.generate]
    return {known(k, n) for k in keys} | {known(k, n).replace("$", "$$") for k in keys}


def assert_no_value(r, secrets: set[str]) -> None:
    text = "\n".join([json.dumps(r.stack), *r.notes, repr(r.secrets), str(r.secrets.values), repr(r.secrets.secrets)])
    leaked = sorted(s for s in secrets if s in text)
    assert not leaked, leaked


def test_the_memstack_stack_reads_its_passwords_from_swarm_secret_files_and_holds_none(tmp_path):
    r = render(memstack_model(tmp_path))
    svcs = r.stack["services"]
    pg = svcs["postgres"]
    pw = known("POSTGRES_PASSWORD")
    name = secret_name("memstack", "POSTGRES_PASSWORD", pw)
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    assert pg["environment"]["POSTGRES_USER"] == "memstack"  # not a secret: stays (its healthcheck reads it)
    assert pg["secrets"] == [{"source": name, "target": "POSTGRES_PASSWORD", "uid": "0", "gid": "0", "mode": 0o400}]
    assert r.stack["secrets"][name] == {"external": True, "name": name}  # created by the deploy, from stdin
    # grafana reads GF_*__FILE, as its own user
    gf = svcs["grafana"]
    assert gf["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/GF_SECURITY_ADMIN_PASSWORD"
    assert gf["secrets"][0]["uid"] == "472"
    # one secret per (key, value), mounted by every service that has it
    assert r.secrets.services[name] == ["api", "postgres", "worker"]
    assert r.secrets.value(name) == pw  # the content the container gets: one `$`, as compose gives it
    assert {s.key for s in r.secrets.secrets} == {"NEO4J_AUTH", "NEO4J_PASSWORD", "POSTGRES_PASSWORD",
                                                 "REDIS_PASSWORD", "REDISCLI_AUTH", "GF_SECURITY_ADMIN_PASSWORD"}
    assert set(r.stack["secrets"]) == r.secrets.wanted()
    for svc in svcs.values():  # the empty API keys stay empty env entries: nothing to hide
        for key, value in (svc.get("environment") or {}).items():
            assert not env_secret(key, value) or value == "", (key, value)
    assert_no_value(r, values())


def test_without_the_opt_in_the_stack_is_refused_naming_services_keys_and_fix_and_no_value(tmp_path):
    m = memstack_model(tmp_path, opt_in=False)
    with pytest.raises(ConfigError) as e:
        render(m)
    msg = str(e.value)
    for part in ("api: NEO4J_PASSWORD, POSTGRES_PASSWORD, REDIS_PASSWORD", "neo4j: NEO4J_AUTH",
                 "redis: REDISCLI_AUTH, REDIS_PASSWORD", f'{FILES_LABEL}: "KEY1,KEY2"', "--allow-env-secrets"):
        assert part in msg
    assert "postgres:" not in msg and "grafana:" not in msg  # their images read *_FILE
    assert not any(v in msg for v in values())
    # allowed: rendered, postgres still reads its file, each service left in the env is noted
    r = render(m, allow_env_secrets=True)
    assert "POSTGRES_PASSWORD_FILE" in r.stack["services"]["postgres"]["environment"]
    assert r.stack["services"]["api"]["environment"]["POSTGRES_PASSWORD"] == known("POSTGRES_PASSWORD").replace(
        "$", "$$")
    assert any(n.startswith("redis: REDISCLI_AUTH, REDIS_PASSWORD stay in its environment") for n in r.notes)
    assert not any(v in n for v in values() for n in r.notes)
    assert known("GRAFANA_ADMIN_PASSWORD") not in repr(r.secrets)


def test_a_command_or_healthcheck_that_expands_a_moved_variable_is_refused(tmp_path):
    # the memstack redis passes "$REDIS_PASSWORD" to --requirepass: empty once it is a file, a redis
    # without a password
    with pytest.raises(ConfigError, match=r"Service neo4j: its healthcheck reads \$NEO4J_AUTH.*NEO4J_AUTH_FILE"):
        render(memstack_model(tmp_path, fix_reads=False))
    m = memstack_model(tmp_path, fix_reads=False)
    m["services"]["neo4j"]["labels"][FILES_LABEL] = ""
    with pytest.raises(ConfigError, match=r"Service redis: its entrypoint reads \$REDIS_PASSWORD, .*"
                                          r"\$\(cat \"\$REDIS_PASSWORD_FILE\"\).* or take REDIS_PASSWORD out"):
        render(m)


def test_a_changed_password_gets_a_new_name_and_the_old_one_is_pruned_an_unchanged_one_is_kept(tmp_path):
    one = render(memstack_model(tmp_path, 1))
    again = render(memstack_model(tmp_path, 1))
    assert again.stack == one.stack and again.secrets.wanted() == one.secrets.wanted()  # idempotent
    assert again.secrets.prune(one.secrets.wanted()) == []
    two = render(memstack_model(tmp_path, 2))  # every generated password changed
    old, new = one.secrets.wanted(), two.secrets.wanted()
    assert not old & new
    other = {"memstack2_POSTGRES_PASSWORD_0123456789", "memstack_notours", "memstack_KEY_xyz0123456",
             "another_POSTGRES_PASSWORD_0123456789"}
    assert two.secrets.prune(old | new | other) == sorted(old)
    assert prune(old | new | other, new, "memstack") == sorted(old)
    assert two.secrets.missing(old) == two.secrets.secrets  # all to create
    assert two.secrets.missing(old | new) == []
    assert_no_value(two, values(1) | values(2))


def test_only_the_changed_secret_gets_a_new_name():
    def pg(pw: str) -> dict:
        return {"name": "demo", "services": {"db": {"image": "postgres:16", "environment": {
            "POSTGRES_PASSWORD": pw, "POSTGRES_USER": "demo", "POSTGRES_INITDB_ARGS": "--auth=scram-sha-256"}}}}

    a, b = render(pg("first-password-1234")), render(pg("second-password-1234"))
    (na,), (nb,) = a.secrets.wanted(), b.secrets.wanted()
    assert na != nb and na.startswith("demo_POSTGRES_PASSWORD_") and nb.startswith("demo_POSTGRES_PASSWORD_")
    assert a.stack["services"]["db"]["environment"] == b.stack["services"]["db"]["environment"] == {
        "POSTGRES_USER": "demo", "POSTGRES_INITDB_ARGS": "--auth=scram-sha-256",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/POSTGRES_PASSWORD"}
    assert prune([na, nb], [nb], "demo") == [na]


def test_the_name_scheme_is_stack_key_and_ten_hex_of_a_salted_sha256():
    v = "s3cret-value-1234"
    digest = hashlib.sha256(b"memstack\0POSTGRES_PASSWORD\0" + v.encode()).hexdigest()[:10]
    assert secret_name("memstack", "POSTGRES_PASSWORD", v) == f"memstack_POSTGRES_PASSWORD_{digest}"
    assert secret_name("memstack", "POSTGRES_PASSWORD", v) == secret_name("memstack", "POSTGRES_PASSWORD", v)
    assert secret_name("memstack", "POSTGRES_PASSWORD", v + "x") != secret_name("memstack", "POSTGRES_PASSWORD", v)
    # the same password in another stack or under another key: another name (no shared hash to look up)
    assert secret_name("other", "POSTGRES_PASSWORD", v)[-10:] != digest
    assert secret_name("memstack", "MYSQL_PASSWORD", v)[-10:] != digest
    long = secret_name("a-long-stack-name", "GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET_FOR_THE_IDENTITY_PROVIDER", v)
    assert len(long) == 64 and ENGINE_NAME.fullmatch(long) and long.startswith("a-long-stack-name_GF_AUTH_")
    assert prune([long], [], "a-long-stack-name") == [long]
    assert ENGINE_NAME.fullmatch(secret_name("demo", "weird.key-name", v)) and "weird_key_name" in \
        secret_name("demo", "weird.key-name", v)
    with pytest.raises(ConfigError, match="too long"):
        secret_name("s" * 60, "K", v)
    with pytest.raises(ConfigError, match="give the stack's name"):
        secret_name("", "K", v)


def test_the_label_opts_an_app_service_in_by_key_or_star_and_a_numeric_user_owns_the_files():
    env = {"DATABASE_URL": "postgresql://app:url-password-1234@db/app", "OPENAI_API_KEY": "sk-test-abcdef123456",
           "JWT_SECRET": "jwt-secret-value-1234", "LOG_LEVEL": "INFO", "ACCESS_TOKEN_EXPIRE_MINUTES": "30"}
    app = {"image": "acme/app:1", "user": "1000:1001", "environment": dict(env),
           "labels": {FILES_LABEL: "JWT_SECRET, OPENAI_API_KEY"}}
    with pytest.raises(ConfigError, match=r"These secrets would stay .*: app: DATABASE_URL\. "):
        render({"name": "acme", "services": {"app": app}})
    app["labels"] = [f"{FILES_LABEL}=*", "other=1"]  # the list form too
    r = render({"name": "acme", "services": {"app": app}})
    s = r.stack["services"]["app"]
    assert s["environment"] == {"LOG_LEVEL": "INFO", "ACCESS_TOKEN_EXPIRE_MINUTES": "30",
                                **{f"{k}_FILE": f"/run/secrets/{k}" for k in ("DATABASE_URL", "JWT_SECRET",
                                                                              "OPENAI_API_KEY")}}
    assert {(m["target"], m["uid"], m["gid"]) for m in s["secrets"]} == {
        (k, "1000", "1001") for k in ("DATABASE_URL", "JWT_SECRET", "OPENAI_API_KEY")}
    assert_no_value(r, {v for k, v in env.items() if env_secret(k, v)} | {"url-password-1234"})
    # a numeric API key is still the key: the one rule (envfiles.env_secret) that k8s_render uses too
    assert env_secret("OPENAI_API_KEY", "12345") and not env_secret("ACCESS_TOKEN_EXPIRE_MINUTES", "30")
    with pytest.raises(ConfigError, match="app: OPENAI_API_KEY"):
        render({"name": "acme", "services": {"app": {"image": "acme/app:1", "environment": {"OPENAI_API_KEY": "1"}}}})


def test_a_secret_outside_the_environment_is_refused_unless_allowed():
    cache = {"image": "redis:7", "labels": {FILES_LABEL: "*"}, "environment": {"REDIS_PASSWORD": "redis-pw-123456"},
             "command": ["redis-server", "--requirepass", "redis-pw-123456"]}
    with pytest.raises(ConfigError, match="cache: the stack file would hold a secret .*command") as e:
        render({"name": "demo", "services": {"cache": cache}})
    assert "redis-pw-123456" not in str(e.value)
    r = render({"name": "demo", "services": {"cache": cache}}, allow_env_secrets=True)
    assert r.stack["services"]["cache"]["command"][-1] == "redis-pw-123456"


def test_the_plan_never_prints_a_value_and_creates_each_secret_from_stdin():
    plan = SecretPlan("demo")
    name = plan.add("POSTGRES_PASSWORD", "plan-password-1234", "db")
    assert plan.add("POSTGRES_PASSWORD", "plan-password-1234", "api") == name
    for text in (repr(plan), str(plan), repr(plan.values), str(plan.values), repr(plan.secrets)):
        assert "plan-password-1234" not in text
    assert repr(plan.values) == "<1 secret value>"
    assert plan.secrets[0].services == ("db", "api")
    argv = plan.create_argv(name)
    assert argv == ["docker", "secret", "create", "--label", "memstack-ops.stack=demo", name, "-"]
    assert plan.value(name) == "plan-password-1234"  # what goes on its stdin
    with pytest.raises(KeyError):
        plan.create_argv("demo_OTHER_0123456789")


def test_a_stack_name_given_to_render_names_the_secrets():
    m = {"services": {"db": {"image": "mariadb:11", "environment": {"MARIADB_ROOT_PASSWORD": "root-pw-123456"}}}}
    with pytest.raises(ConfigError, match="give the stack's name"):
        render(m)  # no project name in the model, none given
    r = render(m, stack="shop")
    (name,) = r.secrets.wanted()
    assert name.startswith("shop_MARIADB_ROOT_PASSWORD_")
    assert r.stack["services"]["db"]["environment"] == {
        "MARIADB_ROOT_PASSWORD_FILE": "/run/secrets/MARIADB_ROOT_PASSWORD"}
