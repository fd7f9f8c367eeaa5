"""Which bind mounts hold data (memstack_ops/binds.py): the one rule a release and a backup share."""

from __future__ import annotations

import pytest

from memstack_ops.binds import classify, folder_binds, is_data_bind, key_of, source_of

P = "/home/me/shop"


def bind(source: str, target: str = "/data", read_only: bool = False) -> dict:
    return {"type": "bind", "source": source, "target": target, **({"read_only": True} if read_only else {})}


def test_a_writable_folder_is_data_and_a_read_only_bind_or_a_file_is_configuration():
    assert is_data_bind(bind(f"{P}/data"), is_file=False)
    assert not is_data_bind(bind(f"{P}/conf", read_only=True), is_file=False)
    assert not is_data_bind(bind(f"{P}/app.yml"), is_file=True)


@pytest.mark.parametrize(("vol", "kind", "included", "reason"), [
    (bind(f"{P}/data/minio"), "dir", True, "a writable folder of the project"),
    (bind(f"{P}/data/minio", read_only=True), "dir", False, "read-only: config, not data"),
    (bind(f"{P}/prometheus.yml"), "file", False, "a single file: config, not data"),
    (bind(f"{P}/nginx.conf", read_only=True), "file", False, "a single file: config, not data"),
    (bind("/var/run/docker.sock"), "socket", False, "a socket, not data"),
    (bind("/var/run/docker.sock", read_only=True), "socket", False, "a socket, not data"),
    (bind("/dev/fuse"), "other", False, "a device or other special file, not data"),
    (bind("/etc/ssl/certs"), "dir", False, "a system path of the host, not the stack's data"),
    (bind("/var/lib/docker/volumes"), "dir", False, "a system path of the host, not the stack's data"),
    (bind("/"), "dir", False, "a system path of the host, not the stack's data"),
    (bind(f"{P}/data/new"), "missing", False,
     "does not exist yet: nothing to back up (Docker creates it when the service starts)"),
])
def test_classify_says_why_a_bind_is_left_out(vol, kind, included, reason):
    v = classify(vol, kind, P, "shop")
    assert (v.included, v.reason) == (included, reason)


def test_a_folder_outside_the_project_says_how_to_include_it_and_backup_binds_does():
    v = classify(bind("/srv/uploads"), "dir", P, "shop")
    assert not v.included
    assert v.reason == (f"outside the project folder {P} (the host's own folder): to include it, add backup_binds = "
                        f"[\"/srv/uploads\"] to [stacks.shop] in memstack-ops.toml")
    assert classify(bind("/srv/uploads"), "dir", P, "shop", ["/srv/uploads"]).included
    assert not classify(bind("/srv/uploads"), "dir", P, "shop", ["/srv/other"]).included
    # a sibling whose name starts like the project folder is outside it
    assert not classify(bind(f"{P}-old/data"), "dir", P, "shop").included
    # backup_binds never makes configuration or the system into data
    assert not classify(bind("/etc/app"), "dir", P, "shop", ["/etc/app"]).included
    assert not classify(bind("/srv/conf", read_only=True), "dir", P, "shop", ["/srv/conf"]).included


def test_keys_are_relative_to_the_project_folder_inside_it_and_absolute_outside():
    assert key_of(f"{P}/data/files", P) == "./data/files"
    assert key_of(f"{P}/data/files/", P + "/") == "./data/files"
    assert key_of("/srv/uploads", P) == "/srv/uploads"
    assert key_of(f"{P}-old/x", P) == f"{P}-old/x"
    assert source_of("./data/files", "/srv/shop/releases/r2/compose/shop") == \
        "/srv/shop/releases/r2/compose/shop/data/files"
    assert source_of("/srv/uploads", "/elsewhere") == "/srv/uploads"


def test_folder_binds_lists_every_bind_of_every_service_and_nothing_else():
    model = {"services": {
        "s3": {"volumes": [bind(f"{P}/data/minio"), {"type": "volume", "source": "cache", "target": "/c"}]},
        "web": {"volumes": [bind(f"{P}/nginx.conf", "/etc/nginx/nginx.conf", True)]},
        "job": {}}}
    assert [(s, v["source"]) for s, v in folder_binds(model)] == [("s3", f"{P}/data/minio"), ("web", f"{P}/nginx.conf")]


def _shop_job(tmp_path, options=None):
    """A Job on a project folder with every kind of bind, probed for real on this machine."""
    from types import SimpleNamespace

    from invoke import Context

    from memstack_ops.backup.engines import Job
    from memstack_ops.backup.shell import LocalShell

    proj = tmp_path / "shop"
    for d in ("data/files", "pgdata", "conf"):
        (proj / d).mkdir(parents=True)
    (proj / "app.yml").write_text("a: 1\n")
    (tmp_path / "outside").mkdir()
    p = str(proj)
    model = {"services": {
        "db": {"image": "postgres:16", "volumes": [bind(f"{p}/pgdata", "/var/lib/postgresql/data")]},
        "files": {"image": "local/debian:bookworm", "volumes": [
            bind(f"{p}/data/files", "/srv/files"), bind(f"{p}/conf", "/etc/shop", True),
            bind(f"{p}/app.yml", "/app.yml"), bind(f"{tmp_path}/outside", "/outside"),
            bind(f"{p}/data/later", "/later")]},
        "worker": {"image": "local/debian:bookworm", "volumes": [bind(f"{p}/data/files", "/in")]}}}
    stack = SimpleNamespace(root=proj, compose_files=("docker-compose.yml",), name="shop", options=options or {},
                            project="shop")
    t = SimpleNamespace(stack=stack, remote=False, release_dir=None)
    return Job(t=t, shell=LocalShell(Context()), model=model, say=lambda m: None), tmp_path  # type: ignore[arg-type]


def test_backup_all_takes_the_data_folders_once_and_names_every_other_bind_with_the_reason(tmp_path):
    from memstack_ops.backup import core

    job, root = _shop_job(tmp_path)
    binds, skipped = core.select_binds(job, (), exclude_db=True)
    assert [(b.key, b.services, b.targets) for b in binds] == [
        ("./data/files", ["files", "worker"], ["files:/srv/files", "worker:/in"])]
    assert {d["source"]: d["reason"] for d in skipped} == {
        "./conf": "read-only: config, not data",
        "./app.yml": "a single file: config, not data",
        f"{root}/outside": f"outside the project folder {root}/shop (the host's own folder): to include it, add "
                           f"backup_binds = [\"{root}/outside\"] to [stacks.shop] in memstack-ops.toml",
        "./data/later": "does not exist yet: nothing to back up (Docker creates it when the service starts)",
        "./pgdata": "the files of database db, which its postgres dump in this set holds"}
    # backup.binds (no database dump beside it) takes the database's folder too; --exclude and names
    assert [b.key for b in core.select_binds(job, ())[0]] == ["./pgdata", "./data/files"]
    assert [b.key for b in core.select_binds(job, (), exclude=["worker"])[0]] == ["./pgdata"]
    assert [b.key for b in core.select_binds(job, ["data/files"])[0]] == ["./data/files"]
    with pytest.raises(core.BackupError, match=r"\./conf \(read-only: config, not data\)"):
        core.select_binds(job, ["./conf"])


def test_backup_binds_in_the_stacks_table_includes_a_folder_outside_the_project(tmp_path):
    from memstack_ops.backup import core

    job, root = _shop_job(tmp_path, {"backup_binds": [f"{tmp_path}/outside"]})
    assert [b.key for b in core.select_binds(job, (), exclude_db=True)[0]] == ["./data/files", f"{root}/outside"]


def test_backup_binds_must_be_a_list_of_paths(tmp_path):
    from memstack_ops.config import ConfigError, _check_types

    ok = _check_types(tmp_path / "memstack-ops.toml", {"stacks": {"shop": {"backup_binds": ["/srv/uploads"]}}})
    assert ok["stacks"]["shop"]["backup_binds"] == ["/srv/uploads"]
    for bad in ("/srv/uploads", [1]):
        with pytest.raises(ConfigError, match=r"stacks\.shop\.backup_binds must be a list of bind sources"):
            _check_types(tmp_path / "memstack-ops.toml", {"stacks": {"shop": {"backup_binds": bad}}})
