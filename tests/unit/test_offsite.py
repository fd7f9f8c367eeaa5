"""backup/offsite.py and [offsite.NAME] in config: targets, the key file's mode, which codec a
push undoes, how restic's failures are told apart, the ssh command an SFTP target gets."""

from __future__ import annotations

import os
import shlex

import pytest
from fakes import write

from memstack_ops.backup import offsite
from memstack_ops.config import ConfigError, offsite_target, resolve


def key(path, text="pw\n", mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


S3 = '[offsite.s3]\ntype = "s3"\nendpoint = "http://127.0.0.1:9"\nbucket = "b"\npassword_file = "{pw}"\n'


def test_a_target_is_read_with_its_keep_policy_and_the_only_one_is_the_default(project, tmp_path):
    pw = key(tmp_path / "k" / "pw")
    write(project, "memstack-ops.toml", S3.format(pw=pw) + "keep_daily = 7\nprefix = \"p\"\n")
    t = offsite_target(resolve(root=project, environ={}), None)
    assert (t.name, t.type, t.password_file, dict(t.keep), t.get("prefix")) == ("s3", "s3", str(pw), {"keep_daily": 7},
                                                                                "p")
    with pytest.raises(ConfigError, match="No off-site target 'x'.*has s3"):
        offsite_target(resolve(root=project, environ={}), "x")


@pytest.mark.parametrize("table, message", [
    ('type = "ftp"', "type must be"),
    ('type = "s3"\nbucket = "b"\npassword_file = "/k"', "needs endpoint"),
    ('type = "sftp"\nhost = "h"\npath = "/r"\npassword_file = "/k"\nbucket = "b"', "unknown key 'bucket'"),
    ('type = "sftp"\nhost = "h"\npath = "/r"\npassword_file = "/k"\nkeep_last = "3"', "keep_last must be a whole"),
    ('type = "sftp"\nhost = "h"\npath = "/r"\npassword_file = "/k"\nkeep_last = -1', "keep_last must be a whole"),
])
def test_a_wrong_target_table_is_a_one_line_error_naming_the_key(project, table, message):
    write(project, "memstack-ops.toml", f"[offsite.t]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        resolve(root=project, environ={})


def test_two_targets_and_no_name_asks_for_one(project, tmp_path):
    pw = key(tmp_path / "k" / "pw")
    write(project, "memstack-ops.toml", S3.format(pw=pw) + S3.format(pw=pw).replace("offsite.s3", "offsite.b"))
    with pytest.raises(ConfigError, match="Name the off-site target.*b, s3"):
        offsite_target(resolve(root=project, environ={}), None)


def test_the_password_file_must_be_private_and_outside_the_project(project, tmp_path):
    good = key(tmp_path / "k" / "pw")
    assert offsite.private_file(str(good), "restic password file", project) == str(good)
    for mode in (0o644, 0o640, 0o604):
        os.chmod(good, mode)
        with pytest.raises(offsite.OffsiteError, match=f"UNPROTECTED.*{mode:04o}.*chmod 600"):
            offsite.private_file(str(good), "restic password file", project)
    inside = key(project / "secrets" / "pw")
    with pytest.raises(offsite.OffsiteError, match="inside the project folder"):
        offsite.private_file(str(inside), "restic password file", project)
    with pytest.raises(offsite.OffsiteError, match="cannot be read"):
        offsite.private_file(str(tmp_path / "missing"), "restic password file", project)


def test_the_password_and_s3_keys_reach_restic_through_its_environment_only(project, tmp_path, monkeypatch):
    pw = key(tmp_path / "k" / "pw")
    creds = key(tmp_path / "k" / "s3.env", "AWS_ACCESS_KEY_ID=AKX\nAWS_SECRET_ACCESS_KEY=sekrit\n")
    write(project, "memstack-ops.toml", S3.format(pw=pw) + f'credentials_file = "{creds}"\nprefix = "/a/b/"\n')
    monkeypatch.setenv("RESTIC_PASSWORD", "stray")  # another password in the caller's environment is not used
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "other")
    st = resolve(root=project, environ={})
    repo = offsite.repo_for(st, offsite_target(st, "s3"))
    assert repo.url == "s3:http://127.0.0.1:9/b/a/b"
    assert repo.env["RESTIC_PASSWORD_FILE"] == str(pw) and "RESTIC_PASSWORD" not in repo.env
    assert (repo.env["AWS_ACCESS_KEY_ID"], repo.env["AWS_SECRET_ACCESS_KEY"]) == ("AKX", "sekrit")
    assert not [a for a in repo.argv("snapshots") if "sekrit" in a or str(pw) in a]


def test_s3_without_keys_names_the_variables(project, tmp_path, monkeypatch):
    pw = key(tmp_path / "k" / "pw")
    write(project, "memstack-ops.toml", S3.format(pw=pw))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    st = resolve(root=project, environ={})
    with pytest.raises(offsite.OffsiteError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.*credentials_file"):
        offsite.repo_for(st, offsite_target(st, "s3"))


def test_an_sftp_target_uses_the_inventory_host_key_user_port_and_known_hosts(project, tmp_path):
    pw = key(tmp_path / "k" / "pw")
    write(project, "memstack-ops.toml",
          f'[hosts]\nuser = "deploy"\nkey = "/keys/id"\nknown_hosts = "/keys/kh"\n\n'
          f'[hosts.vault]\naddress = "10.0.0.5"\nport = 2222\n\n'
          f'[offsite.box]\ntype = "sftp"\nhost = "vault"\npath = "/srv/restic"\npassword_file = "{pw}"\n')
    st = resolve(root=project, environ={})
    url, cmd = offsite.sftp_command(st, offsite_target(st, "box"))
    argv = shlex.split(cmd)
    assert url == "sftp:deploy@10.0.0.5:/srv/restic"
    assert argv[-3:] == ["deploy@10.0.0.5", "-s", "sftp"]
    for a, b in (("-p", "2222"), ("-i", "/keys/id"), ("-o", "UserKnownHostsFile=/keys/kh"),
                 ("-o", "StrictHostKeyChecking=yes"), ("-o", "BatchMode=yes")):
        assert any(argv[i:i + 2] == [a, b] for i in range(len(argv))), (a, b, argv)


@pytest.mark.parametrize("f, manifest, codec", [
    ({"compression": "zstd"}, {}, "zstd"),
    ({"compression": "gzip"}, {"compression": "zstd"}, "gzip"),
    ({"compression": "none"}, {"compression": "zstd"}, None),
    ({"compression": "gzip (pg_dump built-in)"}, {"compression": "zstd"}, None),
    ({"compression": "zstd (pg_dump built-in)"}, {}, None),
    ({}, {"compression": "zstd"}, "zstd"),
    ({}, {}, None),
])
def test_a_push_undoes_only_stream_compression(f, manifest, codec):
    assert offsite.stream_codec(f, manifest) == codec


def _repo(tmp_path):
    from memstack_ops.config import Offsite

    return offsite.Repo(Offsite("far", "s3", str(tmp_path / "pw")), "s3:http://x/b", {"RESTIC_PASSWORD_FILE": "/k/pw"})


@pytest.mark.parametrize("stderr, cls, words", [
    ("Fatal: wrong password or no key found\n", offsite.WrongKey, "does not open"),
    ("Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the "
     "following location?\ns3:http://x/b", offsite.NoRepository, "no restic repository"),
    ("Fatal: unable to open config file: Stat: Get \"http://x/b\": dial tcp 127.0.0.1:9: connect: connection refused",
     offsite.TargetDown, "cannot be reached"),
    ("Fatal: unable to open config file: Stat: The request signature we calculated does not match the signature "
     "you provided.", offsite.OffsiteError, "refused the credentials"),
    ("subprocess ssh: Host key verification failed.", offsite.OffsiteError, "host key"),
])
def test_restic_failures_are_told_apart(tmp_path, stderr, cls, words):
    e = offsite.failure(_repo(tmp_path), "Pushing", stderr)
    assert type(e) is cls and words in str(e) and "\n" not in str(e)


def test_an_s3_endpoint_that_refuses_is_told_in_seconds_before_restic_runs(monkeypatch):
    """restic retries a refused connection ten times with backoff (about a minute, silent) before it
    says anything; the first command checks that the endpoint answers at all."""
    import socket

    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(offsite.subprocess, "Popen", lambda argv, **kw: ran.append(tuple(argv)))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        repo = offsite.Repo(None, f"s3:http://127.0.0.1:{port}/b", {}, endpoint=f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
        monkeypatch.setattr(offsite.Repo, "label", property(lambda r: "off-site target far"))
        with pytest.raises(offsite.TargetDown, match=rf"far cannot be reached: a connection to 127.0.0.1:{port} "
                                                     rf"failed 2 times in \d+ s \(Connection refused\)"):
            offsite.answers(repo.endpoint, "off-site target far", {}, tries=2)
        with pytest.raises(offsite.TargetDown):
            repo.popen("snapshots")
        assert ran == [] and not repo.answered  # restic never started
        offsite.answers(repo.endpoint, "x", {"HTTPS_PROXY": "http://127.0.0.1:3128"}, tries=1)  # via a proxy: skipped
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        repo = offsite.Repo(None, f"s3:http://127.0.0.1:{port}/b", {}, endpoint=f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
        repo.popen("snapshots")
        repo.popen("check")
        assert [a[1:] for a in ran] == [("snapshots",), ("check",)] and repo.answered
