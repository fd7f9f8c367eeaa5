"""remote/release.py: what a release holds (prepared locally, nothing remote) and its id."""

from __future__ import annotations

import os

import pytest
from fakes import write

from memstack_ops.config import resolve
from memstack_ops.remote import release
from memstack_ops.remote.inventory import Host

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def test_prepare_copies_the_stack_with_env_files_private_and_takes_the_runs_time(project, tmp_path):
    write(project, "env/memstack/.env", "DB_PASSWORD=s3cret\n", mode=0o600)
    write(project, "db/memstack/db/0001_init.sql", "create table t (id int);\n")
    dest = tmp_path / "release"
    rel = release.prepare(resolve(root=project, environ={}), Host("h1", "h1"), dest, ["db"], now=NOW)
    assert rel.id.startswith("20270115T080000Z-") and rel.manifest["release"] == rel.id
    assert sorted(rel.files) == ["compose/memstack/compose.yml", "db/memstack/db/0001_init.sql",
                                 "env/memstack/.env", "env/memstack/.env.example"]
    assert rel.private == {"env/memstack/.env"} and rel.stack.root == dest
    assert os.stat(dest / "env/memstack/.env").st_mode & 0o777 == 0o600
    assert rel.manifest["services"] == ["db"] and rel.manifest["env_files"] == ["env/memstack/.env"]


def test_a_data_folder_of_a_stack_is_not_uploaded_but_linked_to_the_shared_folder(project, tmp_path):
    """compose/<stack>/ with a writable ./ bind: the folder's files here (this machine's data) stay
    here, and the release names the folder as shared: on the host it is a link into
    <root>/shared/<stack>/, the same from every release."""
    write(project, "env/memstack/.env", "DB_PASSWORD=s3cret\n", mode=0o600)
    write(project, "compose/memstack/compose.yml", "services:\n  files:\n    image: debian\n    volumes:\n"
          "      - ./data/files:/srv/files\n      - ./conf:/etc/x:ro\n")
    write(project, "compose/memstack/data/files/upload.bin", "this machine's data")
    write(project, "compose/memstack/conf/x.ini", "[x]\n")
    rel = release.prepare(resolve(root=project, environ={}), Host("h1", "h1"), tmp_path / "release", now=NOW)
    assert "compose/memstack/conf/x.ini" in rel.files
    assert not [f for f in rel.files if "upload.bin" in f]
    assert rel.shared == rel.manifest["shared"] == ["compose/memstack/data/files"]
    assert release.shared_place("/srv/x", "memstack", "compose/memstack/data/files") == \
        "/srv/x/shared/memstack/data/files"
    target = release.link_target("memstack", "compose/memstack/data/files")
    assert target == "../../../../../shared/memstack/data/files"
    assert os.path.normpath(f"/srv/x/releases/R/compose/memstack/data/{target}") == "/srv/x/shared/memstack/data/files"


def test_a_writable_bind_holding_the_compose_file_stays_in_the_release(project, tmp_path, capsys):
    write(project, "env/memstack/.env", "DB_PASSWORD=s3cret\n", mode=0o600)
    write(project, "compose/memstack/compose.yml", "services:\n  app:\n    image: debian\n    volumes:\n"
          "      - .:/app\n")
    rel = release.prepare(resolve(root=project, environ={}), Host("h1", "h1"), tmp_path / "release", now=NOW)
    assert rel.shared == [] and "compose/memstack/compose.yml" in rel.files
    assert "stays inside each release" in capsys.readouterr().err


def test_a_release_id_is_the_given_run_time_else_now(tmp_path):
    """Hosts deployed in parallel computed their ids a second apart (…40Z on two, …41Z on one):
    the run's start time now travels with each host's connection (see test_fanout)."""
    assert release.new_id(tmp_path, now=NOW).startswith("20270115T080000Z-")
    assert not release.new_id(tmp_path).startswith("20270115T080000Z-")


def test_release_json_names_must_stay_inside_the_release():
    """Security review H1 (the e2e test drives it over SSH): only relative names under what a
    release uploads, so a host's manifest cannot make this machine write or read elsewhere."""
    from memstack_ops.remote import RemoteError
    from memstack_ops.remote.target import checked_names

    good = {"files": ["compose/tiny/compose.yml", "db/tiny/pg/0001_init.sql", "env/tiny/.env", "secrets/h1.env"],
            "env_files": ["env/tiny/.env", "secrets/h1.env"], "env_template": "env/tiny/.env.example",
            "compose_files": ["compose/tiny/compose.yml"]}
    assert checked_names(good, "h1", "R1", extra=("secrets/h1.env",)) == good["files"]
    for bad in ("../x", "/etc/passwd", "compose/../../x", "compose//x", "compose/./x", "env", "x/y", "env\\..\\x",
                "secrets/h1.env", 5, None):
        with pytest.raises(RemoteError, match=r"h1: release R1's release.json names the file .*Nothing was written"):
            checked_names({**good, "files": ["compose/tiny/compose.yml", bad]}, "h1", "R1")
    for key in ("env_files", "compose_files"):
        with pytest.raises(RemoteError, match="'/home/me/.bashrc'"):
            checked_names({**good, key: ["/home/me/.bashrc"]}, "h1", "R1", extra=("secrets/h1.env",))
    with pytest.raises(RemoteError, match="'/x'"):
        checked_names({**good, "env_template": "/x"}, "h1", "R1", extra=("secrets/h1.env",))
