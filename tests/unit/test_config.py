"""config: precedence of the six layers, stack/stage/overlay selection, find_root."""

from __future__ import annotations

import re

import pytest
from fakes import make_project, write

from memstack_ops import config
from memstack_ops.config import ConfigError, find_root, make_stack, resolve

# The layers from lowest to highest, each setting timeout to its own value.
LAYERS = ["default", "toml", "local", "envfile", "environ", "flag"]


def _layered(root, upto: str):
    """Write every layer up to (and including) ``upto``; return (flags, environ)."""
    n = LAYERS.index(upto)
    flags, environ = {}, {}
    if n >= 1:
        write(root, "memstack-ops.toml", "timeout = 10\n")
    if n >= 2:
        write(root, "memstack-ops.local.toml", "timeout = 20\n")
    if n >= 3:
        write(root, "env/memstack/.env", "DB_PASSWORD=x\nMEMSTACK_TIMEOUT=30\n")
    if n >= 4:
        environ["MEMSTACK_TIMEOUT"] = "40"
    if n >= 5:
        flags["timeout"] = 50.0
    return flags, environ


@pytest.mark.parametrize("top, value, source", [
    ("default", 300.0, "default"),
    ("toml", 10, "memstack-ops.toml"),
    ("local", 20, "memstack-ops.local.toml"),
    ("envfile", 30.0, "env/memstack/.env"),
    ("environ", 40.0, "environment"),
    ("flag", 50.0, "flag"),
])
def test_each_layer_overrides_all_the_layers_below_it_and_sources_names_the_winner(project, top, value, source):
    flags, environ = _layered(project, top)
    s = resolve(flags, root=project, environ=environ)
    assert s["timeout"] == value
    assert s.sources["timeout"] == source
    # settings no layer touched still come from the defaults
    assert s["interval"] == 0.5 and s.sources["interval"] == "default"


def test_layers_win_per_key_so_a_lower_layer_still_supplies_the_keys_higher_ones_leave_alone(project):
    write(project, "memstack-ops.toml", 'timeout = 10\ninterval = 2\nbackups_dir = "bk"\n')
    write(project, "memstack-ops.local.toml", "interval = 3\n")
    write(project, "env/memstack/.env", "MEMSTACK_DISK_MIN_GB=7\n")
    s = resolve({"stage": "prod"}, root=project, environ={"MEMSTACK_DISK_WARN_GB": "9"})
    assert (s["timeout"], s.sources["timeout"]) == (10, "memstack-ops.toml")
    assert (s["interval"], s.sources["interval"]) == (3, "memstack-ops.local.toml")
    assert (s["backups_dir"], s.sources["backups_dir"]) == ("bk", "memstack-ops.toml")
    assert (s["disk_min_gb"], s.sources["disk_min_gb"]) == (7.0, "env/memstack/.env")
    assert (s["disk_warn_gb"], s.sources["disk_warn_gb"]) == (9.0, "environment")
    assert (s["stage"], s.sources["stage"]) == ("prod", "flag")


def test_flags_given_as_none_mean_not_given_and_do_not_override(project):
    write(project, "memstack-ops.toml", 'stage = "staging"\n')
    s = resolve({"stage": None, "timeout": None}, root=project, environ={})
    assert s["stage"] == "staging" and s.sources["stage"] == "memstack-ops.toml"
    assert s.sources["timeout"] == "default"


def test_empty_memstack_environment_variables_are_ignored(project):
    s = resolve({}, root=project, environ={"MEMSTACK_TIMEOUT": "", "MEMSTACK_STAGE": ""})
    assert s["timeout"] == 300.0 and s["stage"] == "dev"
    assert s.sources["timeout"] == "default"


def test_env_file_and_environment_values_are_parsed_to_their_types(project):
    write(project, "env/memstack/.env", "MEMSTACK_INTERVAL=0.25\nMEMSTACK_OVERLAYS= local, ,extra ,\n")
    s = resolve({}, root=project, environ={"MEMSTACK_TIMEOUT": "12.5"})
    assert s["interval"] == 0.25 and isinstance(s["interval"], float)
    assert s["overlays"] == ["local", "extra"]
    assert s["timeout"] == 12.5


def test_the_env_file_read_is_the_one_of_the_stack_chosen_by_flag_or_environment(tmp_path):
    root = make_project(tmp_path, stacks=("memstack", "other"))
    write(root, "env/memstack/.env", "MEMSTACK_TIMEOUT=11\n")
    write(root, "env/other/.env", "MEMSTACK_TIMEOUT=22\n")
    assert resolve({}, root=root, environ={})["timeout"] == 11.0
    assert resolve({"stack": "other"}, root=root, environ={})["timeout"] == 22.0
    assert resolve({}, root=root, environ={"MEMSTACK_STACK": "other"})["timeout"] == 22.0


def test_memstack_stack_inside_an_env_file_does_not_switch_the_stack(tmp_path):
    root = make_project(tmp_path, stacks=("memstack", "other"))
    write(root, "env/memstack/.env", "MEMSTACK_STACK=other\n")
    s = resolve({}, root=root, environ={})
    assert s["stack"] == "memstack" and s.sources["stack"] == "default"


def test_per_stack_tables_from_both_config_files_are_merged_key_by_key(project):
    write(project, "memstack-ops.toml",
          '[stacks.memstack]\nproject = "prodname"\n[stacks.memstack.probes]\napi = "tcp:8000"\n')
    write(project, "memstack-ops.local.toml", '[stacks.memstack.probes]\nworker = "http://127.0.0.1:9/h"\n')
    s = resolve({}, root=project, environ={})
    assert s["stacks"]["memstack"] == {"project": "prodname",
                                       "probes": {"api": "tcp:8000", "worker": "http://127.0.0.1:9/h"}}
    assert s.stack().project == "prodname"
    assert s.stack().options["probes"]["worker"] == "http://127.0.0.1:9/h"


def test_invalid_toml_raises_config_error_naming_the_file(project):
    bad = write(project, "memstack-ops.local.toml", "timeout = = 3\n")
    with pytest.raises(ConfigError) as e:
        resolve({}, root=project, environ={})
    assert str(bad) in str(e.value) and "not valid TOML" in str(e.value)


def test_unknown_setting_in_toml_raises_config_error_naming_file_and_key(project):
    cfg = write(project, "memstack-ops.toml", "timout = 3\nstage = 'dev'\n")
    with pytest.raises(ConfigError) as e:
        resolve({}, root=project, environ={})
    msg = str(e.value)
    assert str(cfg) in msg and "timout" in msg and "known settings are" in msg and "timeout" in msg


def test_a_non_number_in_the_env_file_raises_config_error_naming_the_file(project):
    env = write(project, "env/memstack/.env", "MEMSTACK_TIMEOUT=soon\n")
    with pytest.raises(ConfigError) as e:
        resolve({}, root=project, environ={})
    assert str(env) in str(e.value) and "timeout" in str(e.value) and "'soon'" in str(e.value)


def test_a_non_number_in_the_environment_raises_config_error_naming_the_variable(project):
    with pytest.raises(ConfigError, match="MEMSTACK_INTERVAL: interval must be a float"):
        resolve({}, root=project, environ={"MEMSTACK_INTERVAL": "fast"})


@pytest.mark.parametrize("key, raw", [("timeout", "0"), ("timeout", "-5"), ("interval", "0")])
def test_a_non_positive_timeout_or_interval_is_rejected_naming_its_source(project, key, raw):
    with pytest.raises(ConfigError) as e:
        resolve({}, root=project, environ={f"MEMSTACK_{key.upper()}": raw})
    assert f"{key} must be positive" in str(e.value) and "environment" in str(e.value)


def test_a_zero_timeout_flag_is_rejected_as_coming_from_the_flag(project):
    with pytest.raises(ConfigError, match=r"timeout must be positive, got 0 \(from flag\)"):
        resolve({"timeout": 0}, root=project, environ={})


def test_a_non_numeric_timeout_flag_is_a_config_error(project):
    # invoke hands `--timeout abc` to the task as the string "abc" (the task's default is None)
    with pytest.raises(ConfigError):
        resolve({"timeout": "abc"}, root=project, environ={})


def test_a_string_timeout_in_toml_is_a_config_error_naming_the_file(project):
    write(project, "memstack-ops.toml", 'timeout = "fast"\n')
    with pytest.raises(ConfigError):
        resolve({}, root=project, environ={})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_a_non_finite_timeout_is_rejected(project, raw):
    with pytest.raises(ConfigError):
        resolve({}, root=project, environ={"MEMSTACK_TIMEOUT": raw})


def test_unknown_stack_lists_the_available_ones(tmp_path):
    root = make_project(tmp_path, stacks=("memstack", "ragflow"))
    (root / "compose" / "notastack").mkdir()  # no compose.yml: not a stack
    s = resolve({"stack": "nosuch"}, root=root, environ={})
    with pytest.raises(ConfigError) as e:
        s.stack()
    assert "Unknown stack 'nosuch'" in str(e.value)
    assert "this project has memstack, ragflow " in str(e.value)
    assert "notastack" not in str(e.value)


def test_unknown_stack_in_an_empty_project_says_none(tmp_path):
    with pytest.raises(ConfigError, match="this project has none"):
        make_stack(tmp_path, "memstack", "dev", [])


def test_unknown_stage_lists_the_stages(project):
    with pytest.raises(ConfigError, match="Unknown stage 'production': use one of dev, staging, prod"):
        resolve({"stage": "production"}, root=project, environ={}).stack()


def test_unknown_overlay_lists_the_overlays_present(tmp_path):
    root = make_project(tmp_path, overlays=("local", "prod", "gpu"))
    with pytest.raises(ConfigError) as e:
        make_stack(root, "memstack", "dev", ["locla"])
    msg = str(e.value)
    assert "Unknown overlay 'locla' for stack memstack" in msg
    assert "compose/memstack/compose.locla.yml" in msg
    assert "Overlays here: gpu, local, prod." in msg


def test_unknown_overlay_without_any_overlay_files_says_none(project):
    with pytest.raises(ConfigError, match="Overlays here: none"):
        make_stack(project, "memstack", "dev", ["local"])


def test_a_plain_stack_has_only_the_base_compose_file_and_env_file(project):
    st = make_stack(project, "memstack", "prod", [])
    assert st.compose_files == ("compose/memstack/compose.yml",)
    assert st.env_files == ("env/memstack/.env",)
    assert st.env_template == "env/memstack/.env.example"
    assert st.env_file == "env/memstack/.env"
    assert st.project == "memstack" and st.root == project


def test_the_stage_compose_file_and_env_file_are_picked_up_only_when_present(tmp_path):
    root = make_project(tmp_path, overlays=("prod", "local"))
    write(root, "env/memstack/.env.prod", "X=1\n")
    prod = make_stack(root, "memstack", "prod", ["local"])
    assert prod.compose_files == ("compose/memstack/compose.yml", "compose/memstack/compose.prod.yml",
                                  "compose/memstack/compose.local.yml")
    assert prod.env_files == ("env/memstack/.env", "env/memstack/.env.prod")
    staging = make_stack(root, "memstack", "staging", ["local"])
    assert staging.compose_files == ("compose/memstack/compose.yml", "compose/memstack/compose.local.yml")
    assert staging.env_files == ("env/memstack/.env",)


def test_overlays_keep_the_order_they_were_given(tmp_path):
    root = make_project(tmp_path, overlays=("a", "b"))
    st = make_stack(root, "memstack", "dev", ["b", "a"])
    assert st.compose_files[1:] == ("compose/memstack/compose.b.yml", "compose/memstack/compose.a.yml")


def test_settings_stack_uses_the_resolved_stage_overlays_and_project(tmp_path):
    root = make_project(tmp_path, overlays=("local",))
    write(root, "memstack-ops.toml", 'overlays = ["local"]\n[stacks.memstack]\nproject = "ms1"\n')
    st = resolve({"stage": "staging"}, root=root, environ={}).stack()
    assert (st.name, st.stage, st.project) == ("memstack", "staging", "ms1")
    assert st.compose_files[-1] == "compose/memstack/compose.local.yml"


def test_available_stacks_is_sorted_and_empty_without_a_compose_folder(tmp_path):
    assert config.available_stacks(tmp_path) == []
    make_project(tmp_path, stacks=("zeta", "alpha"))
    assert config.available_stacks(tmp_path) == ["alpha", "zeta"]


def test_find_root_honours_memstack_root(monkeypatch, project):
    monkeypatch.setenv("MEMSTACK_ROOT", str(project))
    assert find_root() == project.resolve()
    s = resolve({}, environ={})  # root=None: found through MEMSTACK_ROOT
    assert s.root == project.resolve()


def test_find_root_rejects_a_memstack_root_that_is_not_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMSTACK_ROOT", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="is not a directory"):
        find_root()


def test_find_root_walks_up_to_the_folder_holding_the_config_file(tmp_path):
    write(tmp_path, "memstack-ops.toml", "")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()


def test_find_root_accepts_a_folder_with_compose_and_env(tmp_path):
    make_project(tmp_path)
    (tmp_path / "sub").mkdir()
    assert find_root(tmp_path / "sub") == tmp_path.resolve()


def test_defaults_are_not_mutated_by_resolve(project):
    before = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
              for k, v in config.DEFAULTS.items()}
    write(project, "memstack-ops.toml", '[stacks.memstack]\nproject = "p"\n')
    resolve({"overlays": ["x"]}, root=project, environ={"MEMSTACK_TIMEOUT": "3"})
    assert config.DEFAULTS == before


# --- issue 12 L5: bad types in the toml files are one-line errors, not tracebacks -------------

@pytest.mark.parametrize("text, expect", [
    (b'stack = "\xff\xfe"\n', r"is not UTF-8 \(byte 0xff at offset 9\)"),
    (b"stacks = 5\n", r": stacks must be a table of stacks: \[stacks.NAME\].*; got a number \(5\)"),
    (b"[stacks]\nmemstack = 3\n", r": stacks.memstack must be a table: \[stacks.memstack\].*; got a number \(3\)"),
    (b"[stacks.memstack]\nprobes = 3\n", r": stacks.memstack.probes must be a table"),
    (b"[stacks.memstack.probes]\napi = 80\n", r": stacks.memstack.probes.api must be a string"),
    (b"[stacks.memstack]\nproject = 7\n", r": stacks.memstack.project must be a string"),
    (b"overlays = 3\n", r": overlays must be a list of names, e.g. overlays = \[\"local\"\]; got a number"),
    (b"overlays = [1]\n", r": overlays must be a list of names"),
    (b"timeout = true\n", r": timeout must be a number, e.g. timeout = 300; got a boolean"),
    (b"stage = 2\n", r": stage must be a string"),
    (b"hosts = 3\n", r": hosts must be a table"),
])
def test_a_wrongly_typed_setting_is_a_one_line_error_naming_file_key_and_fix(project, text, expect):
    cfg = project / "memstack-ops.local.toml"
    cfg.write_bytes(text)
    with pytest.raises(ConfigError) as e:
        resolve({}, root=project, environ={}).stack()
    msg = str(e.value)
    assert msg.startswith(f"{cfg}") and "\n" not in msg
    assert re.search(expect, msg), msg


@pytest.mark.parametrize("text, overlays", [('overlays = "local"\n', ["local"]),
                                            ('overlays = "local, extra"\n', ["local", "extra"])])
def test_a_string_of_overlays_is_one_overlay_or_a_comma_list_not_letters(project, text, overlays):
    write(project, "memstack-ops.local.toml", text)
    assert resolve({}, root=project, environ={})["overlays"] == overlays
