"""config: a compose file anywhere (-f, --env-file, --project-name, [stacks.NAME] file): project
directory, env files, project name, stack name, the errors; and -f on both command lines."""

from __future__ import annotations

import pytest
from fakes import cli, make_project, write

from memstack_ops import config
from memstack_ops.config import ConfigError, compose_project_name, file_stack, resolve, service_env_files
from memstack_ops.remote.program import our_core_args


@pytest.fixture(autouse=True)
def no_command_line():
    config.use_command_line()
    yield
    config.use_command_line()


def shop(tmp_path, name_line="name: shopfront\n"):
    f = write(tmp_path, "apps/shop/docker-compose.yml", f"{name_line}services:\n  web:\n    image: nginx\n"
                                                       f"    env_file: ../common.env\n")
    write(tmp_path, "apps/shop/.env", "PORT=8080\n")
    write(tmp_path, "apps/common.env", "TOKEN=x\n")
    return f


def test_the_project_directory_is_the_first_files_folder_with_its_env_and_name(tmp_path):
    f = shop(tmp_path)
    extra = write(tmp_path, "overrides/extra.yml", "services: {}\n")
    st = file_stack("s", "dev", [f, extra], [])
    assert st.root == f.parent and st.compose_files == ("docker-compose.yml", "../../overrides/extra.yml")
    assert st.env_files == (".env",) and st.env_template == "" and st.from_file
    assert st.project == "shopfront"
    assert service_env_files(st) == ["../common.env"]


def test_project_name_precedence_flag_then_compose_project_name_then_name_key_then_folder(tmp_path, monkeypatch):
    f = shop(tmp_path, name_line="")
    assert file_stack("s", "dev", [f], []).project == "shop"  # the folder's name, as compose takes it
    f.write_text('name: "${SHOP_NAME:-fallback}"\n' + f.read_text())
    assert file_stack("s", "dev", [f], []).project == "fallback"
    write(tmp_path, "apps/shop/.env", "SHOP_NAME=fromenv\n")
    assert file_stack("s", "dev", [f], []).project == "fromenv"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "fromvar")
    assert compose_project_name([f], {}) == "fromvar"
    assert file_stack("s", "dev", [f], [], project="flag").project == "flag"
    assert config.normalize_project("My Shop.v2") == "myshopv2"


def test_env_file_flag_replaces_the_folders_env(tmp_path):
    f = shop(tmp_path)
    other = write(tmp_path, "secrets/prod.env", "PORT=9\n")
    assert file_stack("s", "dev", [f], [other]).env_files == ("../../secrets/prod.env",)
    with pytest.raises(ConfigError, match="nosuch.env given with --env-file does not exist"):
        file_stack("s", "dev", [f], [tmp_path / "nosuch.env"])


def test_env_file_forms_are_all_found(tmp_path):
    f = write(tmp_path, "p/compose.yml", "services:\n  a:\n    env_file: [ './a.env', b.env ]\n  c:\n    env_file:\n"
                                         "      - ./c.env  # note\n      - path: ./d.env\n        required: false\n"
                                         "    environment:\n      X: 1\n  e:\n    env_file: ${NOPE}/e.env\n")
    assert service_env_files(file_stack("s", "dev", [f], [])) == ["./a.env", "b.env", "./c.env", "./d.env"]


def test_f_names_the_stack_by_its_project_unless_stack_names_it(tmp_path):
    root = make_project(tmp_path / "proj")
    f = shop(tmp_path)
    config.use_command_line([str(f)])
    s = resolve(root=root, environ={})
    assert s["stack"] == "shopfront" and s.sources["stack"] == "-f"
    st = s.stack()
    assert st.from_file and st.root == f.parent and st.name == "shopfront"
    s = resolve({"stack": "shop"}, root=root, environ={})
    assert s["stack"] == "shop" and s.stack().project == "shopfront"
    config.use_command_line([str(f)], project_name="other")
    s = resolve(root=root, environ={})
    assert s["stack"] == "other" and s.stack().project == "other"


def test_f_relative_paths_are_the_callers(tmp_path):
    f = shop(tmp_path)
    config.use_command_line(["shop/docker-compose.yml"], cwd=f.parent.parent)
    s = resolve(root=make_project(tmp_path / "proj"), environ={})
    assert s["files"] == [str(f)]


@pytest.mark.parametrize("toml, match", [
    ('[stacks.shop]\nfile = "../apps/shop/docker-compose.yml"\n', "both name compose files"),
    ("", "both name compose files .*compose/memstack/compose.yml"),
])
def test_f_with_a_stack_that_has_its_own_file_is_refused(tmp_path, toml, match):
    root = make_project(tmp_path / "proj")
    write(root, "memstack-ops.toml", toml)
    f = shop(tmp_path)
    config.use_command_line([str(f)])
    with pytest.raises(ConfigError, match=match):
        resolve({"stack": "shop" if toml else "memstack"}, root=root, environ={})


def test_a_missing_file_names_it_and_where_it_was_given(tmp_path):
    root = make_project(tmp_path / "proj")
    config.use_command_line([str(tmp_path / "nosuch.yml")])
    with pytest.raises(ConfigError, match=r"nosuch.yml does not exist: check the path given with -f"):
        resolve(root=root, environ={}).stack()
    config.use_command_line()
    write(root, "memstack-ops.toml", '[stacks.shop]\nfile = "gone/compose.yml"\n')
    with pytest.raises(ConfigError, match=r"gone/compose.yml does not exist: check file = in \[stacks.shop\]"):
        resolve({"stack": "shop"}, root=root, environ={}).stack()


def test_toml_file_stack_is_relative_to_the_project_root_and_listed(tmp_path):
    root = make_project(tmp_path / "proj")
    shop(root)
    write(root, "memstack-ops.toml", '[stacks.shop]\nfile = "apps/shop/docker-compose.yml"\nproject = "mine"\n')
    s = resolve({"stack": "shop"}, root=root, environ={})
    st = s.stack()
    assert st.root == root / "apps" / "shop" and st.project == "mine" and st.name == "shop"
    assert config.file_stacks(s) == {"shop": ["apps/shop/docker-compose.yml"]}


@pytest.mark.parametrize("toml, match", [
    ('files = ["x.yml"]\n', r"files is a command-line option \(-f FILE\).*\[stacks.NAME\] file"),
    ("[stacks.shop]\nfile = 3\n", r"stacks.shop.file must be a compose file's path"),
    ("[stacks.shop]\nfile = []\n", r"stacks.shop.file must be"),
])
def test_toml_file_settings_are_checked(tmp_path, toml, match):
    root = make_project(tmp_path / "proj")
    write(root, "memstack-ops.toml", toml)
    with pytest.raises(ConfigError, match=match):
        resolve(root=root, environ={})


def test_env_file_flag_without_f_is_refused(tmp_path):
    root = make_project(tmp_path / "proj")
    config.use_command_line(env_files=[str(write(tmp_path, "x.env", "A=1\n"))])
    with pytest.raises(ConfigError, match="--env-file goes with -f"):
        resolve(root=root, environ={}).stack()


def test_f_is_compose_file_and_config_keeps_its_long_name():
    from invoke import Program

    args = {a.name: a for a in our_core_args(Program().core_args())}
    assert args["file"].names == ("file", "f") and args["config"].names == ("config",)
    assert {"hosts", "env-file", "project-name"} <= set(args)


@pytest.mark.parametrize("binary", ["memstack-ops", "inv"])
def test_both_command_lines_take_f_and_name_a_missing_file(tmp_path, binary):
    project = make_project(tmp_path / "proj")
    r = cli(project, "-f", str(tmp_path / "nosuch.yml"), "config", binary=binary)
    assert r.returncode == 1 and "nosuch.yml does not exist" in r.stderr and "Traceback" not in r.stderr, r.stderr
