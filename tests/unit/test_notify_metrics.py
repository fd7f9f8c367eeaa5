"""[notify] and [metrics]: payloads, URL masking, the text format written and read back, config checks."""

from __future__ import annotations

import math
import os
import stat

import pytest

from memstack_ops import metrics, notify
from memstack_ops.config import resolve
from memstack_ops.errors import ConfigError


def test_mask_url_hides_credentials_and_tokens():
    assert notify.mask_url("https://user:pw@hooks.example.com/services/T1/B2/SECRET") == \
        "https://****@hooks.example.com/****"
    assert notify.mask_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"
    assert "SECRET" not in notify.mask_url("https://h/x?token=SECRET")


def test_payload_formats():
    slack = notify.payload({"format": "slack"}, "backup.all", False, "memstack", "h1", 2.5, "boom")
    assert slack == {"text": "memstack-ops backup.all FAILED for stack memstack on h1 after 2.5 s: boom"}
    body = notify.payload({}, "backup.all", True, "memstack", "this machine", 1, None)
    assert body["job"] == "backup.all" and body["ok"] is True and body["error"] is None and "text" in body


def test_job_names():
    assert notify.job_name("backup_all") == "backup.all" and notify.job_name("deploy") == "deploy"


def test_text_format_round_trip_and_escaping():
    s = {metrics.sample("memstack_backup_bytes", {"stack": 's"1', "kind": "all", "host": "a\\b\nc"}): 12345.0,
         metrics.sample("memstack_drill_last_success", {"stack": "x"}): 1.0,
         metrics.sample("memstack_backup_duration_seconds", {"stack": "x"}): 1.25}
    text = metrics.render(s)
    assert "# TYPE memstack_backup_bytes gauge" in text and "# HELP memstack_backup_bytes " in text
    assert 'memstack_backup_bytes{host="a\\\\b\\nc",kind="all",stack="s\\"1"} 12345' in text
    assert metrics.parse(text) == s
    assert math.isnan(metrics.parse('m{a="1"} NaN')[("m", (("a", "1"),))])
    with pytest.raises(ValueError):
        metrics.parse("not a sample line at all {")


def test_record_writes_atomically_0644_and_keeps_other_samples(tmp_path):
    path = str(tmp_path / "sub" / "memstack.prom")
    assert metrics.record("memstack_backup_bytes", {"kind": "all"}, 10, path=path)
    assert metrics.record("memstack_backup_bytes", {"kind": "postgres"}, 20, path=path)
    assert metrics.record("memstack_backup_bytes", {"kind": "all"}, 30, path=path)
    got = metrics.parse(open(path).read())
    assert got == {("memstack_backup_bytes", (("kind", "all"),)): 30.0,
                   ("memstack_backup_bytes", (("kind", "postgres"),)): 20.0}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path / "sub")) == ["memstack.prom", "memstack.prom.lock"]  # no temp file left
    with pytest.raises(ValueError):
        metrics.record("memstack_no_such_metric", {}, 1, path=path)


def test_no_metrics_path_writes_nothing(tmp_path):
    (tmp_path / "compose" / "s").mkdir(parents=True)
    (tmp_path / "env").mkdir()
    assert not metrics.record("memstack_backup_bytes", {}, 1, settings=resolve(root=tmp_path, environ={}))


@pytest.mark.parametrize("toml,words", [
    ('[notify]\nurl = 5\n', "notify.url must be a string"),
    ('[notify]\nformat = "xml"\n', "notify.format must be"),
    ('[notify]\non_success = "yes"\n', "notify.on_success must be a boolean"),
    ('[notify]\nhook = "x"\n', "unknown setting notify.hook"),
    ('[metrics]\npath = 1\n', "metrics.path must be a string"),
    ('backup_max_age_h = "x"\n', "backup_max_age_h must be a number"),
])
def test_config_errors(tmp_path, toml, words):
    (tmp_path / "compose" / "s").mkdir(parents=True)
    (tmp_path / "env").mkdir()
    (tmp_path / "memstack-ops.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        resolve(root=tmp_path, environ={})
    assert words in str(e.value)


def test_config_values(tmp_path):
    (tmp_path / "compose" / "s").mkdir(parents=True)
    (tmp_path / "env").mkdir()
    (tmp_path / "memstack-ops.toml").write_text(
        '[notify]\nurl = "http://127.0.0.1:1/"\nformat = "slack"\non_success = true\n[metrics]\npath = "m.prom"\n')
    s = resolve(root=tmp_path, environ={"MEMSTACK_BACKUP_MAX_AGE_H": "48"})
    assert s["notify"]["format"] == "slack" and s["backup_max_age_h"] == 48.0 and s["drill_max_age_h"] == 26.0
    assert metrics.configured_path(s) == str(tmp_path / "m.prom")
