"""health: healthcheck/probe argv, Go durations, Watch.poll and Watch.wait against a scripted
MockContext (no engine). Checks run through a synchronous pool unless a test says otherwise."""

from __future__ import annotations

import json
import re
import shlex
import threading
import time

import pytest
from fakes import SyncPool, ccmd, commands, containers_cmd, inspect_lines, make_stack, parse_cli
from invoke import MockContext, Result
from invoke.exceptions import CommandTimedOut

from memstack_ops.compose import Compose
from memstack_ops.errors import HealthError
from memstack_ops.health import Status, Watch, _seconds, check_argv, probe_argv

# --- check_argv / probe_argv ------------------------------------------------------------------


def test_cmd_shell_runs_through_sh_c_with_the_words_joined():
    assert check_argv("p-db-1", ["CMD-SHELL", "pg_isready", "-q"]) == [
        "docker", "exec", "p-db-1", "/bin/sh", "-c", "pg_isready -q"]


def test_cmd_runs_the_words_directly():
    assert check_argv("p-api-1", ["CMD", "curl", "-f", "http://localhost:8000/health"]) == [
        "docker", "exec", "p-api-1", "curl", "-f", "http://localhost:8000/health"]


@pytest.mark.parametrize("test", [["NONE"], []])
def test_none_or_empty_test_means_no_check(test):
    assert check_argv("c", test) is None


def test_double_dollars_from_compose_config_become_single_dollars():
    argv = check_argv("c", ["CMD-SHELL", 'NEO4J_PASSWORD="$${NEO4J_AUTH#*/}" cypher-shell \'RETURN 1\''])
    assert argv[-1] == 'NEO4J_PASSWORD="${NEO4J_AUTH#*/}" cypher-shell \'RETURN 1\''
    assert check_argv("c", ["CMD", "echo", "$$HOME", "$$$$"])[-2:] == ["$HOME", "$$"]


def test_the_check_command_line_keeps_dollars_away_from_the_local_shell():
    line = shlex.join(check_argv("c", ["CMD-SHELL", "test -n \"$${PGUSER}\""]))
    assert line == "docker exec c /bin/sh -c 'test -n \"${PGUSER}\"'"


def test_a_test_without_a_known_prefix_is_run_by_the_shell():
    assert check_argv("c", ["redis-cli", "ping"]) == ["docker", "exec", "c", "/bin/sh", "-c", "redis-cli ping"]


def test_tcp_probe_opens_a_bash_tcp_socket_on_localhost_by_default():
    assert probe_argv("tcp:8080") == ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
    assert probe_argv("tcp:5432@10.0.0.5") == ["bash", "-c", "exec 3<>/dev/tcp/10.0.0.5/5432"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/health", "https://example.test/ready"])
def test_http_probe_uses_curl_with_a_short_timeout_that_fails_on_http_errors(url):
    assert probe_argv(url) == ["curl", "-fsS", "-o", "/dev/null", "--max-time", "3", url]


@pytest.mark.parametrize("probe", ["udp:53", "ftp://host/", "8080", ""])
def test_unknown_probes_are_rejected_saying_what_is_allowed(probe):
    with pytest.raises(HealthError, match=r"Unknown probe .*use tcp:PORT or an http\(s\):// URL"):
        probe_argv(probe)


def test_a_tcp_probe_with_a_non_numeric_port_is_rejected_as_a_health_error():
    with pytest.raises(HealthError):
        probe_argv("tcp:http")


# --- durations --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, seconds", [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1h2m3s", 3723.0), ("1.5s", 1.5),
    ("2m", 120.0), ("250us", 0.00025), ("0s", 0.0), ("45", 45.0),
])
def test_go_duration_strings_are_parsed_to_seconds(raw, seconds):
    assert _seconds(raw, 99.0) == pytest.approx(seconds)


def test_missing_duration_gives_the_default_and_numbers_are_seconds_or_nanoseconds():
    assert _seconds(None, 30.0) == 30.0
    assert _seconds(7, 30.0) == 7.0
    assert _seconds(5_000_000_000, 30.0) == 5.0  # nanoseconds, as the engine API gives them


# --- Watch.poll -------------------------------------------------------------------------------

MODEL = {"services": {
    "db": {"healthcheck": {"test": ["CMD-SHELL", 'pg_isready -U "$${POSTGRES_USER}"'], "timeout": "5s"}},
    "api": {"healthcheck": {"test": ["CMD", "curl", "-f", "http://localhost:8000/health"], "timeout": "1m30s"}},
    "web": {},  # no healthcheck: probe configured below
    "plain": {},  # no healthcheck, no probe
    "migrate": {},  # one-shot
    "nocheck": {"healthcheck": {"disable": True, "test": ["CMD", "false"]}},
    "strtest": {"healthcheck": {"test": "redis-cli ping"}},
}}
SECRETS = {"DB_PASSWORD": "Sup3rS3cretValue"}


@pytest.fixture
def comp(tmp_path):
    return Compose(make_stack(tmp_path, project="p"), secrets=SECRETS)


def row(service: str, state: str = "running", health: str = "", **kw) -> dict:
    return {"Service": service, "State": state, "Health": health, "Name": f"p-{service}-1", **kw}


def ps_cmd(comp, *services):
    """The listing a poll makes (one for the project; the services are picked from it)."""
    return containers_cmd(comp)


def exec_cmd(service: str, test: list[str]) -> str:
    return shlex.join(check_argv(f"p-{service}-1", test))


DB_CHECK = exec_cmd("db", ["CMD-SHELL", 'pg_isready -U "${POSTGRES_USER}"'])


def logs_cmd(comp, service):
    return ccmd(comp, "logs", "--no-color", "--no-log-prefix", "--tail", "50", service)


def inspect_cmd(service):
    return shlex.join(["docker", "inspect", "--format", "{{json .State.Health}}", f"p-{service}-1"])


def watch(c, comp, **kw) -> Watch:
    kw.setdefault("pool", SyncPool())
    return Watch(c, comp, MODEL, **kw)


def test_a_service_goes_from_starting_to_ready_when_its_own_check_passes(comp):
    changes = []
    c = MockContext(run={
        ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="starting"))),
        DB_CHECK: [Result(stderr="no response", exited=2), Result("accepting connections\n")],
    })
    w = watch(c, comp, on_change=lambda st: changes.append((st.state, st.health, st.ready)))
    assert w.poll(["db"]) is False
    st = w.statuses["db"]
    assert (st.state, st.health, st.ready, st.failed) == ("running", "starting", False, False)
    assert st.detail == "starting: check not passing yet" and st.output == "no response"
    assert st.container == "p-db-1"
    assert w.poll(["db"]) is True
    assert st.ready and st.detail == "healthy (check passed)" and st.output == "accepting connections"
    assert st.ready_after is not None and st.ready_after >= 0
    assert changes == [("running", "starting", False), ("running", "starting", True)]
    # the check ran with the healthcheck's own timeout
    check_calls = [call for call in c.run.call_args_list if call.args[0] == DB_CHECK]
    assert len(check_calls) == 2 and all(call.kwargs["timeout"] == 5.0 for call in check_calls)


def test_a_ready_service_is_not_checked_again(comp):
    c = MockContext(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="starting"))),
                         DB_CHECK: Result("ok")})
    w = watch(c, comp)
    assert w.poll(["db"]) and w.poll(["db"])
    assert commands(c).count(DB_CHECK) == 1


def test_engine_healthy_counts_as_ready_without_running_the_check(comp):
    c = MockContext(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="healthy")))})
    w = watch(c, comp)
    assert w.poll(["db"]) is True
    assert w.statuses["db"].detail == "healthy (engine)"
    assert commands(c) == [ps_cmd(comp, "db")]


def test_a_service_without_a_container_is_pending(comp):
    c = MockContext(run={ps_cmd(comp, "db", "api"): Result(inspect_lines(row("db", health="healthy")))})
    w = watch(c, comp)
    assert w.poll(["db", "api"]) is False
    assert (w.statuses["api"].state, w.statuses["api"].detail) == ("pending", "no container yet")


def test_a_created_container_waits_without_a_check(comp):
    c = MockContext(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", state="created")))})
    w = watch(c, comp)
    assert w.poll(["db"]) is False
    assert commands(c) == [ps_cmd(comp, "db")]


def test_cmd_checks_run_directly_with_their_parsed_timeout(comp):
    check = exec_cmd("api", ["CMD", "curl", "-f", "http://localhost:8000/health"])
    c = MockContext(run={ps_cmd(comp, "api"): Result(inspect_lines(row("api"))), check: Result("")})
    w = watch(c, comp)
    assert w.poll(["api"]) is True
    call = next(call for call in c.run.call_args_list if call.args[0] == check)
    assert call.kwargs["timeout"] == 90.0
    assert w.statuses["api"].output == "exit 0"  # no output: the exit code stands in


def test_a_string_healthcheck_test_runs_through_the_shell(comp):
    check = exec_cmd("strtest", ["CMD-SHELL", "redis-cli ping"])
    c = MockContext(run={ps_cmd(comp, "strtest"): Result(inspect_lines(row("strtest"))), check: Result("PONG")})
    assert watch(c, comp).poll(["strtest"]) is True


def test_a_service_with_a_probe_is_ready_when_the_probe_passes(comp):
    probe = shlex.join(probe_argv("tcp:8080"))
    c = MockContext(run={ps_cmd(comp, "web"): Result(inspect_lines(row("web"))), probe: [Result(exited=1), Result("")]})
    w = watch(c, comp, probes={"web": "tcp:8080"})
    assert w.poll(["web"]) is False
    assert w.poll(["web"]) is True
    assert all(call.kwargs["timeout"] == 5.0 for call in c.run.call_args_list if call.args[0] == probe)


@pytest.mark.parametrize("service", ["plain", "nocheck"])
def test_a_running_service_without_a_check_or_probe_is_ready(comp, service):
    c = MockContext(run={ps_cmd(comp, service): Result(inspect_lines(row(service)))})
    w = watch(c, comp)
    assert w.poll([service]) is True
    assert w.statuses[service].output == "no healthcheck: running counts as ready"
    assert commands(c) == [ps_cmd(comp, service)]


def test_a_one_shot_service_that_exited_0_is_ready(comp):
    c = MockContext(run={ps_cmd(comp, "migrate"): Result(inspect_lines(row("migrate", state="exited", ExitCode=0)))})
    w = watch(c, comp, one_shot={"migrate"})
    assert w.poll(["migrate"]) is True
    assert w.statuses["migrate"].detail == "completed successfully"


def test_a_check_that_times_out_is_not_passing_and_says_so(comp):
    class TimingOut(MockContext):
        def run(self, command, *a, **kw):
            if command == DB_CHECK:
                raise CommandTimedOut(Result(command=command), timeout=kw["timeout"])
            return super().run(command, *a, **kw)

    c = TimingOut(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="starting")))})
    w = watch(c, comp)
    assert w.poll(["db"]) is False
    assert w.statuses["db"].output == "check timed out after 5 s"


def _failing(comp, svc_row, logs="line one\nFATAL: password Sup3rS3cretValue rejected\n", health_log=None):
    service = svc_row["Service"]
    health = {"Status": "unhealthy", "Log": [{"Output": "old"}, {"Output": health_log}]} if health_log else None
    return MockContext(run={
        ps_cmd(comp, service): Result(inspect_lines(svc_row)),
        logs_cmd(comp, service): Result(logs),
        inspect_cmd(service): Result(json.dumps(health)),
    })


@pytest.mark.parametrize("svc_row, why", [
    (row("db", state="exited", ExitCode=1), "container exited with code 1"),
    (row("db", state="dead", ExitCode=137), "container dead with code 137"),
    (row("db", state="restarting"), "container is restarting (crash loop)"),
    (row("db", health="unhealthy"), "the engine marked it unhealthy"),
], ids=["exited", "dead", "restarting", "unhealthy"])
def test_a_failing_container_fails_the_poll_at_once_with_its_logs(comp, svc_row, why):
    c = _failing(comp, svc_row)
    w = watch(c, comp)
    with pytest.raises(HealthError) as e:
        w.poll(["db"])
    msg = str(e.value)
    assert f"Service 'db' failed: {why}." in msg
    assert "--- last 50 log lines ---\nline one\nFATAL: password **** rejected" in msg
    assert "Sup3rS3cretValue" not in msg
    assert "left as it is for inspection: see `memstack-ops logs --service db`" in msg
    assert w.statuses["db"].failed
    assert DB_CHECK not in commands(c)  # a failed container is not checked


def test_the_failure_report_shows_the_engines_last_health_check_output(comp):
    c = _failing(comp, row("db", health="unhealthy"), health_log="pg: auth failed for Sup3rS3cretValue\n")
    with pytest.raises(HealthError) as e:
        watch(c, comp).poll(["db"])
    assert "--- last health-check output ---\npg: auth failed for ****\n" in str(e.value)


def test_the_failure_report_says_when_there_is_no_output_or_log(comp):
    c = _failing(comp, row("db", state="exited", ExitCode=2), logs="")
    with pytest.raises(HealthError) as e:
        watch(c, comp).poll(["db"])
    assert "--- last health-check output ---\n(no output)\n--- last 50 log lines ---\n(no log lines)" in str(e.value)


def test_a_one_shot_service_that_exited_non_zero_fails(comp):
    c = _failing(comp, row("migrate", state="exited", ExitCode=4), logs="migration 7 failed")
    with pytest.raises(HealthError, match=r"Service 'migrate' failed: the one-shot job exited with code 4"):
        watch(c, comp, one_shot={"migrate"}).poll(["migrate"])


def test_every_failed_service_is_reported_not_just_the_first(comp):
    c = MockContext(run={
        ps_cmd(comp, "db", "api"): Result(inspect_lines(row("db", state="exited", ExitCode=1),
                                                 row("api", state="restarting"))),
        logs_cmd(comp, "db"): Result("boom"),
        logs_cmd(comp, "api"): Result("boom"),
        inspect_cmd("db"): Result("null"),
        inspect_cmd("api"): Result("null"),
    })
    with pytest.raises(HealthError) as e:
        watch(c, comp).poll(["db", "api"])
    msg = str(e.value)
    assert "Service 'db' failed" in msg and "Service 'api' failed" in msg
    assert "`memstack-ops logs --service db`, `memstack-ops logs --service api`" in msg


def test_the_logs_command_suggested_after_a_failure_is_a_valid_invocation(comp):
    from invoke.exceptions import ParseError

    c = _failing(comp, row("db", state="exited", ExitCode=1))
    with pytest.raises(HealthError) as e:
        watch(c, comp).poll(["db"])
    suggested = re.search(r"see `(memstack-ops [^`]*)`", str(e.value)).group(1)
    try:
        program = parse_cli(shlex.split(suggested))
    except ParseError as err:
        pytest.fail(f"{suggested!r} does not parse: {err}")
    assert [t.name for t in program.tasks] == ["logs"]


def test_checks_run_in_the_background_and_are_picked_up_by_a_later_poll(comp):
    """With the real thread pool: a poll never blocks on a check; its result lands in a later poll."""
    c = MockContext(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="starting"))),
                         DB_CHECK: Result("ok")})
    w = Watch(c, comp, MODEL)
    try:
        deadline = time.monotonic() + 5
        polls = 0
        while not w.poll(["db"]):
            polls += 1
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert w.statuses["db"].ready and w.inflight == {}
        assert commands(c).count(DB_CHECK) == 1  # one check in flight at a time
    finally:
        w.close()


# --- Watch.wait -------------------------------------------------------------------------------

def test_wait_returns_once_every_service_is_ready_sleeping_the_interval_between_rounds(comp):
    slept, rounds = [], []
    c = MockContext(run={
        ps_cmd(comp, "db", "plain"): Result(inspect_lines(row("db", health="starting"), row("plain"))),
        DB_CHECK: [Result(exited=1), Result(exited=1), Result("ok")],
    })
    pool = SyncPool()
    w = watch(c, comp, pool=pool)
    w.wait(["db", "plain"], time.monotonic() + 60, 2.5, sleep=slept.append, before_poll=lambda: rounds.append(1))
    assert all(st.ready for st in w.statuses.values())
    # 3 rounds, plus one call right after round 1, where `plain` turned ready: what waits for it
    # starts then, not an interval later
    assert slept == [2.5, 2.5] and len(rounds) == 4
    assert pool.shut_down  # wait always closes its pool


def test_what_waits_for_a_service_starts_in_the_round_it_turned_ready_not_an_interval_later(comp):
    events: list[str] = []
    c = MockContext(run={
        ps_cmd(comp, "db", "plain"): Result(inspect_lines(row("db", health="starting"), row("plain"))),
        DB_CHECK: [Result(exited=1), Result("ok")],
    })
    w = watch(c, comp, pool=SyncPool())
    w.wait(["db", "plain"], time.monotonic() + 60, 2.5, sleep=lambda s: events.append("sleep"),
           before_poll=lambda: events.append("ready:" + ",".join(sorted(s for s, st in w.statuses.items()
                                                                        if st.ready))))
    assert events == ["ready:", "ready:plain", "sleep", "ready:plain"], events


def test_wait_times_out_deterministically_after_max_polls_naming_the_service(comp):
    slept = []
    c = MockContext(run={
        ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="starting"))),
        DB_CHECK: Result(stdout="still warming up", exited=1),
        logs_cmd(comp, "db"): Result("waiting for WAL"),
    })
    w = watch(c, comp)
    with pytest.raises(HealthError) as e:
        w.wait(["db"], time.monotonic() + 1000, 5.0, sleep=slept.append, max_polls=3)
    msg = str(e.value)
    assert re.search(r"Service 'db' failed: not ready after \d+ s \(starting: check not passing yet\)\.", msg)
    assert "--- last health-check output ---\nstill warming up" in msg
    assert "waiting for WAL" in msg
    assert slept == [5.0, 5.0]
    assert commands(c).count(ps_cmd(comp, "db")) == 3


def test_wait_times_out_naming_only_the_services_not_ready(comp):
    c = MockContext(run={
        ps_cmd(comp, "db", "api"): Result(inspect_lines(row("db", health="healthy"))),
        logs_cmd(comp, "api"): Result(""),
    })
    w = watch(c, comp)
    with pytest.raises(HealthError) as e:
        w.wait(["db", "api"], time.monotonic() + 1000, 1.0, sleep=lambda s: None, max_polls=2)
    msg = str(e.value)
    assert "Service 'api' failed: not ready after" in msg and "(no container yet)" in msg
    assert "Service 'db'" not in msg


def test_wait_with_a_deadline_already_passed_polls_once_then_times_out(comp):
    slept = []
    c = MockContext(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", state="created"))),
                         logs_cmd(comp, "db"): Result(""), inspect_cmd("db"): Result("null")})
    with pytest.raises(HealthError, match="not ready after"):
        watch(c, comp).wait(["db"], time.monotonic() - 1, 1.0, sleep=slept.append)
    assert slept == [] and commands(c).count(ps_cmd(comp, "db")) == 1


def test_wait_fails_fast_on_a_crash_without_waiting_for_the_timeout(comp):
    slept = []
    c = _failing(comp, row("db", state="exited", ExitCode=1))
    with pytest.raises(HealthError) as e:
        watch(c, comp).wait(["db"], time.monotonic() + 1000, 1.0, sleep=slept.append, max_polls=50)
    assert "container exited with code 1" in str(e.value) and "not ready after" not in str(e.value)
    assert slept == []


def test_status_defaults():
    st = Status("db")
    assert (st.state, st.health, st.ready, st.failed, st.ready_after) == ("pending", "", False, False, None)


def test_a_quick_check_is_judged_in_the_round_that_started_it(comp):
    """Checks run in a thread pool; a round waits up to ``settle`` for them, so a check that passes in
    50 ms makes the service ready now instead of one poll interval later."""
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    class Slow:
        def run(self, cmd, **kw):
            if cmd == ps_cmd(comp, "db"):
                return Result(inspect_lines(row("db", health="starting")))
            assert cmd == DB_CHECK
            _time.sleep(0.05)
            return Result("accepting connections\n")

    assert Watch(Slow(), comp, MODEL, pool=ThreadPoolExecutor(2)).poll(["db"]) is True
    w = Watch(Slow(), comp, MODEL, pool=ThreadPoolExecutor(2), settle=0)
    assert w.poll(["db"]) is False and w.inflight  # without settle: judged one round later
    w.close()



def test_a_slow_check_that_failed_is_followed_by_the_next_in_the_round_that_judges_it(comp):
    """A check slower than the settle is judged a round later; when it failed, that same round sends
    the next one (not the round after: one check per round, not one per two)."""
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Event()
    checks = []

    class Slow:
        def run(self, cmd, **kw):
            if cmd == ps_cmd(comp, "db"):
                return Result(inspect_lines(row("db", health="starting")))
            assert cmd == DB_CHECK
            checks.append(cmd)
            gate.wait(5)
            return Result("no response\n", exited=2) if len(checks) == 1 else Result("accepting connections\n")

    w = Watch(Slow(), comp, MODEL, pool=ThreadPoolExecutor(2), settle=0)
    try:
        assert w.poll(["db"]) is False and len(checks) == 1
        gate.set()
        for _ in range(100):  # the first check finishes (bounded: 5 s)
            if w.inflight["db"].done():
                break
            time.sleep(0.05)
        assert w.poll(["db"]) is False
        assert w.statuses["db"].output == "no response"
        for _ in range(100):
            if len(checks) == 2:
                break
            time.sleep(0.05)
        assert len(checks) == 2, "the next check was not sent in the round that judged the failed one"
    finally:
        w.close()


def test_a_passing_check_wakes_the_wait_a_failing_one_does_not(comp):
    woken = []
    results = [Result("no response\n", exited=2), Result("accepting connections\n")]
    c = MockContext(run={ps_cmd(comp, "db"): Result(inspect_lines(row("db", health="starting"))), DB_CHECK: results})
    w = watch(c, comp, on_pass=lambda: woken.append(1))
    assert w.poll(["db"]) is False and woken == []
    assert w.poll(["db"]) is True and woken == [1]


# --- readiness per kind: a real query over TCP inside the container -----------------------------

from memstack_ops.health import rule  # noqa: E402
from memstack_ops.kinds import ready_argv  # noqa: E402

KIND_MODEL = {"services": {
    # a socket-only check, as seed files have it: passes against the image's temporary init server
    "pg": {"image": "postgres:16", "healthcheck": {"test": ["CMD-SHELL", "pg_isready -q -U app"], "timeout": "5s"}},
    "pgbare": {"image": "postgres:16", "environment": {"POSTGRES_PASSWORD": "Sup3rS3cretValue"}},
    "kv": {"image": "redis:7", "command": ["redis-server", "--requirepass", "Sup3rS3cretValue", "--port", "6380"]},
    "store": {"image": "quay.io/coreos/etcd:v3.5.18"},
    "web": {"image": "nginx:1"},
}}
PG_SOCKET = exec_cmd("pg", ["CMD-SHELL", "pg_isready -q -U app"])


def tcp(service: str, kind: str, model=KIND_MODEL) -> str:
    return shlex.join(ready_argv(f"p-{service}-1", kind, model["services"][service])[0])


def kwatch(c, comp, **kw) -> Watch:
    kw.setdefault("pool", SyncPool())
    kw.setdefault("pause", lambda s: None)
    return Watch(c, comp, KIND_MODEL, **kw)


def test_a_passing_socket_check_is_not_enough_for_a_postgres_that_refuses_tcp(comp):
    """Issue 12: the temporary init server answers pg_isready on the socket; dependants connect
    over TCP, where nothing listens yet."""
    c = MockContext(run={
        ps_cmd(comp, "pg"): Result(inspect_lines(row("pg", health="starting"))),
        PG_SOCKET: Result("/var/run/postgresql:5432 - accepting connections"),
        tcp("pg", "postgres"): [Result(stderr="psql: error: connection to server at \"127.0.0.1\", port 5432 failed: "
                                              "Connection refused", exited=2),
                                Result("1\n"), Result("1\n")],
    })
    w = kwatch(c, comp)
    assert w.poll(["pg"]) is False
    assert w.statuses["pg"].detail == "starting: postgres does not answer a query over TCP yet"
    assert "Connection refused" in w.statuses["pg"].output
    assert w.poll(["pg"]) is True
    assert w.statuses["pg"].detail == "healthy (check passed, postgres answers over TCP)"
    assert commands(c).count(tcp("pg", "postgres")) == 3  # once refused, then once more after the settle


def test_engine_healthy_is_not_enough_either_but_the_compose_check_is_not_run_again(comp):
    c = MockContext(run={ps_cmd(comp, "pg"): Result(inspect_lines(row("pg", health="healthy"))),
                         tcp("pg", "postgres"): Result("1\n")})
    w = kwatch(c, comp)
    assert w.poll(["pg"]) is True
    assert PG_SOCKET not in commands(c)
    assert w.statuses["pg"].detail == "healthy (engine, postgres answers over TCP)"


def test_the_query_must_pass_again_after_the_settle(comp):
    """The init server can answer once and then restart: one success is not enough."""
    pauses = []
    c = MockContext(run={ps_cmd(comp, "pgbare"): Result(inspect_lines(row("pgbare"))),
                         tcp("pgbare", "postgres"): [Result("1\n"),
                                                     Result(stderr="the database system is shutting down", exited=2)]})
    w = kwatch(c, comp, pause=pauses.append, confirm_after=1.5)
    assert w.poll(["pgbare"]) is False
    assert pauses == [1.5]
    assert w.statuses["pgbare"].output == "the database system is shutting down"


def test_a_database_without_a_healthcheck_is_not_ready_just_because_it_runs(comp):
    c = MockContext(run={ps_cmd(comp, "pgbare"): Result(inspect_lines(row("pgbare"))),
                         tcp("pgbare", "postgres"): [Result(stderr="Connection refused", exited=2), Result("1"),
                                                     Result("1")]})
    w = kwatch(c, comp)
    assert w.poll(["pgbare"]) is False
    assert w.poll(["pgbare"]) is True
    assert w.statuses["pgbare"].detail == "healthy (postgres answers over TCP)"


def test_a_service_of_no_known_kind_without_a_check_keeps_the_running_rule(comp):
    c = MockContext(run={ps_cmd(comp, "web"): Result(inspect_lines(row("web")))})
    w = kwatch(c, comp)
    assert w.poll(["web"]) is True
    assert w.statuses["web"].detail == "no healthcheck: running counts as ready"
    assert commands(c) == [ps_cmd(comp, "web")]


def test_a_database_refusing_the_password_from_its_environment_fails_at_once(comp):
    c = MockContext(run={ps_cmd(comp, "pgbare"): Result(inspect_lines(row("pgbare"))),
                         tcp("pgbare", "postgres"): Result(
                             stderr='FATAL:  password authentication failed for user "app"', exited=2),
                         logs_cmd(comp, "pgbare"): Result(""), inspect_cmd("pgbare"): Result("null")})
    with pytest.raises(HealthError, match=r"(?s)refuses the credentials from its container's environment "
                                          r"\(POSTGRES_PASSWORD: .*password authentication failed"):
        kwatch(c, comp).poll(["pgbare"])


def test_a_redis_password_in_the_command_goes_to_the_check_on_stdin(comp):
    argv, stdin = ready_argv("p-kv-1", "redis", KIND_MODEL["services"]["kv"])
    assert "Sup3rS3cretValue" not in shlex.join(argv) and stdin == "Sup3rS3cretValue\n6380\n\n"  # port, no config
    assert argv[:3] == ["docker", "exec", "-i"]
    c = MockContext(run={ps_cmd(comp, "kv"): Result(inspect_lines(row("kv"))), tcp("kv", "redis"): Result("PONG\n")})
    assert kwatch(c, comp).poll(["kv"]) is True
    fed = [call.kwargs["in_stream"].read() for call in c.run.call_args_list if call.args[0] == tcp("kv", "redis")]
    assert fed == ["Sup3rS3cretValue\n6380\n\n"] * 2


@pytest.mark.parametrize("service, probe, one_shot, expect", [
    (KIND_MODEL["services"]["pg"], None, False, "compose check + postgres query"),
    (KIND_MODEL["services"]["pgbare"], None, False, "postgres query"),
    (KIND_MODEL["services"]["pgbare"], "tcp:5432", False, "probe tcp:5432 + postgres query"),
    ({"image": "nginx:1"}, "tcp:80", False, "probe tcp:80"),
    ({"image": "nginx:1"}, None, False, "running"),
    ({"image": "nginx:1", "healthcheck": {"test": ["CMD", "true"]}}, None, False, "compose check"),
    ({"image": "nginx:1", "healthcheck": {"test": ["NONE"]}}, None, False, "running"),
    ({"image": "minio/mc"}, None, True, "exit 0"),
])
def test_rule_names_what_judges_a_service(service, probe, one_shot, expect):
    assert rule(service, probe, one_shot) == expect
