"""backup.schedule's pure parts: cron syntax, the systemd calendar, entries and their command,
the tool's own log rotation."""

from __future__ import annotations

import pytest

from memstack_ops import schedule as sch


@pytest.mark.parametrize("expr", ["0 3 * * *", "*/15 * * * *", "30 2 * * 1-5", "0 0 1 jan,jul sun", "5,35 1-3/2 * * 7"])
def test_valid_cron(expr):
    assert len(sch.check_cron(expr)) == 5


@pytest.mark.parametrize("expr,words", [
    ("0 3 * *", "has 4 field(s)"), ("@daily", "has 1 field(s)"), ("60 3 * * *", "minute field '60'"),
    ("0 24 * * *", "hour field"), ("0 3 0 * *", "day of month field"), ("0 3 * 13 *", "month field"),
    ("0 3 * * 8", "day of week field"), ("*/0 * * * *", "minute field"), ("0 5-2 * * *", "hour field"),
    ("x 3 * * *", "minute field")])
def test_invalid_cron_says_which_field_and_how(expr, words):
    with pytest.raises(sch.ScheduleError) as e:
        sch.check_cron(expr)
    assert words in str(e.value) and "5 fields" in str(e.value)


def test_systemd_calendar_from_cron():
    assert sch.on_calendar("0 3 * * *".split()) == "*-*-* 3:0:00"
    assert sch.on_calendar("*/15 * * * *".split()) == "*-*-* *:0/15:00"
    assert sch.on_calendar("30 2 * * 1-5".split()) == "Mon..Fri *-*-* 2:30:00"
    with pytest.raises(sch.ScheduleError):
        sch.on_calendar("0 3 1 * 1".split())


def plan(**kw):
    base = dict(name="memstack-ops-p", cron="0 3 * * *", argv=["/opt/bin/memstack-ops", "backup.run", "--stack", "s"],
                cwd="/srv/my project", log="/var/log/memstack-ops/p.log", env={"MEMSTACK_ROOT": "/srv/my project"},
                description="d")
    base.update(kw)
    return sch.Plan(**base)


def test_cron_entries_quote_and_escape_percent_and_give_the_command_back():
    p = plan(log="/var/log/50%.log")
    text = sch.cron_d_text(p)
    assert "0 3 * * * root cd '/srv/my project' && exec env MEMSTACK_ROOT='/srv/my project' " in text
    assert "50\\%.log" in text
    assert sch.scheduled_command(sch.Installed("cron.d", [], text)) == p.command()
    block = sch.crontab_block(p)
    assert sch.scheduled_command(sch.Installed("crontab", [], block)) == p.command()
    tab = "MAILTO=x\n1 1 * * * other\n" + block + "2 2 * * * mine\n"
    assert sch.strip_block(tab, p.name) == "MAILTO=x\n1 1 * * * other\n2 2 * * * mine\n"


def test_systemd_units():
    units = sch.systemd_units(plan())
    assert "OnCalendar=*-*-* 3:0:00" in units["memstack-ops-p.timer"]
    svc = units["memstack-ops-p.service"]
    assert "ExecStart=/opt/bin/memstack-ops backup.run --stack s" in svc
    assert "StandardOutput=append:/var/log/memstack-ops/p.log" in svc
    # root's HOME, USER, LOGNAME, SHELL as cron gives them: systemd sets them only with a User=
    assert "\nUser=root\n" in svc.split("[Service]")[1]


def test_rotate_log_copy_truncates_by_size(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"a" * 100)
    assert not sch.rotate_log(str(log), max_bytes=100)
    with open(log, "ab") as writer:  # a writer appending, as cron's >> does
        writer.write(b"b")
        writer.flush()
        assert sch.rotate_log(str(log), max_bytes=100, keep=2)
        writer.write(b"after")
        writer.flush()
    assert (tmp_path / "run.log.1").read_bytes() == b"a" * 100 + b"b"
    assert log.read_bytes() == b"after"
    log.write_bytes(b"c" * 200)
    assert sch.rotate_log(str(log), max_bytes=100, keep=2)
    assert (tmp_path / "run.log.2").read_bytes() == b"a" * 100 + b"b"
    assert (tmp_path / "run.log.1").read_bytes() == b"c" * 200


def test_drill_due():
    assert sch.drill_due("weekly", None, 1e9)
    assert not sch.drill_due("weekly", 1e9 - 86400, 1e9)
    assert sch.drill_due("weekly", 1e9 - 7 * 86400, 1e9)
    with pytest.raises(sch.ScheduleError):
        sch.drill_due("hourly", None, 0)


def test_ages_flag_old_and_missing_and_find_the_newest_drill():
    import datetime as dt

    from memstack_ops.backup.freshness import Age, newest_drill

    now = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC)
    fresh = Age("backup", now - dt.timedelta(hours=3), "x", 26)
    assert not fresh.old(now) and fresh.line(now) == "newest backup: 3h ago (x)"
    stale = Age("drill", now - dt.timedelta(hours=30), "", 26)
    assert stale.old(now) and stale.line(now).endswith("OLD (over 26 h)")
    assert Age("drill", None, "", 26).old(now)

    class Files:
        def __init__(self, files):
            self.files = files

        def read_text(self, path):
            return self.files.get(path)

    shell = Files({"/b/s/2/drill.json": '{"time": "2026-01-01T00:00:00Z", "ok": true}',
                   "/b/s/1/drill.json": '{"time": "2026-01-01T05:00:00Z", "ok": false}',
                   "/b/.s.drilled": "2025-12-31T00:00:00+00:00\n"})
    when, detail = newest_drill(shell, "/b/s", ["2", "1"])
    assert when == dt.datetime(2026, 1, 1, 5, tzinfo=dt.UTC) and detail == "FAILED, set 1"
