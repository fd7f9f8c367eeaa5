"""k8s_render.py / k8s.render: Kubernetes manifests of the real default stacks (issue 15, render only).

The models come from `docker compose config` (the compose CLI plugin only: no engine is contacted),
as the task gets them; every rendered object is checked against the Kubernetes 1.30 schemas in
kubernetes-validate's strict mode (unknown fields refused)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from fakes import make_stack

from memstack_ops import k8s_render
from memstack_ops.compose import Compose
from memstack_ops.envfiles import read_template
from memstack_ops.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"
STATEFUL = {"memstack": {"neo4j", "postgres", "redis"},
            "memos": {"neo4j", "qdrant", "etcd", "minio", "milvus"},
            "sanic-web": {"mysql", "minio", "neo4j-apoc"}}
PROJECTS = {"memstack": "memstack", "memos": "memos-dev", "sanic-web": "sanic-web"}


def secret(stack: str, key: str) -> str:
    return f"K8s-Test-Secret-{stack}-{key}-7f3a9c"  # one per key: a wrong secretKeyRef cannot hide


def env_file(tmp_path: Path, stack: str) -> Path:
    """The stack's env file as env.init writes it: template defaults, a known secret per generated key."""
    keys = read_template(REPO / f"env/{stack}/.env.example")
    p = tmp_path / f"{stack}.env"
    p.write_text("".join(f"{k.key}={secret(stack, k.key) if k.generate else k.default}\n" for k in keys))
    return p


def model(tmp_path: Path, stack: str) -> dict:
    """The stack's compose model with its local overlay, as ``Compose.model`` renders it for the task."""
    from invoke import Context

    st = make_stack(REPO, project=PROJECTS[stack],
                    files=(f"compose/{stack}/compose.yml", f"compose/{stack}/compose.local.yml"),
                    env_files=(str(env_file(tmp_path, stack)),))
    return Compose(st).model(Context())


def objects(r: k8s_render.Rendered, kind: str | None = None) -> list[dict]:
    return [m.obj for m in r.manifests if kind is None or m.obj["kind"] == kind]


def by_name(r: k8s_render.Rendered, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects(r, kind)}


def validate_all(r: k8s_render.Rendered) -> None:
    """Every object, as written (the YAML text parsed back), passes the strict 1.30 schema."""
    import kubernetes_validate

    parsed = [d for text in r.files().values() for d in yaml.safe_load_all(text)]
    assert parsed == objects(r)  # the YAML writer loses nothing
    for obj in parsed:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("stack", ["memstack", "memos", "sanic-web"])
@pytest.mark.parametrize("databases", ["external", "statefulset"])
def test_the_default_stacks_render_valid_production_shaped_manifests(tmp_path, stack, databases):
    m = model(tmp_path, stack)
    r = k8s_render.render(m, stack, databases=databases, root=str(REPO))
    validate_all(r)
    deployments = by_name(r, "Deployment")
    stateless = set(m["services"]) - STATEFUL[stack] - {"proxy"}
    assert set(deployments) == stateless and stateless
    # the edge proxy is not rendered (its config is the tool's, at deploy time): said in a warning
    assert "proxy" in m["services"] and "proxy" not in by_name(r, "Service")
    assert any(w.startswith("proxy: the stack's edge proxy is not rendered") for w in r.warnings)
    hpas, pdbs, services = by_name(r, "HorizontalPodAutoscaler"), by_name(r, "PodDisruptionBudget"), \
        by_name(r, "Service")
    for name, d in deployments.items():
        assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0,
                                                                                   "maxSurge": 1}}
        assert "replicas" not in d["spec"]  # the autoscaler owns the count
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["readinessProbe"] and c["livenessProbe"], name
        assert c["resources"]["requests"]["cpu"]  # the HPA's utilization needs one
        hpa = hpas[name]
        assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] == 2
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert pdbs[name]["spec"]["minAvailable"] == 1
    for name in STATEFUL[stack]:
        svc = services[name]
        if databases == "external":
            assert "selector" not in svc["spec"] and svc["spec"]["ports"]
            assert name not in by_name(r, "StatefulSet")
        else:
            sts = by_name(r, "StatefulSet")[name]["spec"]
            assert sts["replicas"] == 1 and sts["serviceName"] == name and svc["spec"]["clusterIP"] == "None"
            volumes = [v["source"] for v in m["services"][name].get("volumes") or [] if v["type"] == "volume"]
            assert [t["metadata"]["name"] for t in sts.get("volumeClaimTemplates", [])] == \
                [k8s_render.k8s_name(v) for v in volumes]
        assert name not in hpas and name not in pdbs


def test_no_secret_of_the_env_lands_in_the_output_and_the_secret_holds_only_its_key_names(tmp_path):
    m = model(tmp_path, "memstack")
    for databases in k8s_render.DATABASES:
        r = k8s_render.render(m, "memstack", databases=databases, root=str(REPO))
        text = "\n".join(r.files().values())
        for key in ("POSTGRES_PASSWORD", "NEO4J_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
            assert secret("memstack", key) in str(m)  # the model has it: the test could fail
            assert secret("memstack", key) not in text, key
        (sec,) = objects(r, "Secret")
        assert not {"data", "stringData"} & set(sec)
        assert "kubectl create secret generic memstack-secrets" in r.files()[k8s_render.SECRET_FILE]
    api = by_name(r, "Deployment")["api"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"]}
    assert refs["POSTGRES_PASSWORD"] == {"name": "memstack-secrets", "key": "POSTGRES_PASSWORD"}
    assert refs["OPENAI_API_KEY"]["optional"] is True  # empty in the env: the pod starts without it
    config = by_name(r, "ConfigMap")["api-env"]["data"]
    assert config["POSTGRES_HOST"] == "postgres" and "POSTGRES_PASSWORD" not in config
    assert sec["metadata"]["annotations"]["memstack-ops/keys"].split(",") == sorted(
        ["GF_SECURITY_ADMIN_PASSWORD", "NEO4J_AUTH", "NEO4J_PASSWORD", "POSTGRES_PASSWORD", "REDISCLI_AUTH",
         "REDIS_PASSWORD"])
    # the redis password reaches redis-server through the container's shell: $$ is Kubernetes' escape of $
    redis = by_name(r, "StatefulSet")["redis"]["spec"]["template"]["spec"]["containers"][0]
    assert '--requirepass "$$REDIS_PASSWORD"' in redis["command"][-1]


def test_probes_come_from_the_http_label_the_healthcheck_the_kind_or_the_port(tmp_path):
    memos = k8s_render.render(model(tmp_path, "memos"), "memos", databases="statefulset")
    deps = by_name(memos, "Deployment")
    attu = deps["attu"]["spec"]["template"]["spec"]["containers"][0]  # no healthcheck: TCP on its port
    assert attu["readinessProbe"]["tcpSocket"] == {"port": 3000}
    api = deps["memos-api"]["spec"]["template"]["spec"]["containers"][0]  # its proxy route's health path
    assert api["livenessProbe"]["httpGet"] == {"path": "/docs", "port": 8000}
    assert api["startupProbe"]["failureThreshold"] == 2 + 5  # start_period 20s / 10s + retries
    assert api["readinessProbe"]["periodSeconds"] == 10 and api["readinessProbe"]["failureThreshold"] == 5
    # compose aliases keep their names in the cluster
    assert by_name(memos, "Service")["neo4j-docker"]["spec"]["selector"]["app.kubernetes.io/name"] == "neo4j"
    memstack = k8s_render.render(model(tmp_path, "memstack"), "memstack", databases="statefulset")
    worker = by_name(memstack, "Deployment")["worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["exec"]["command"][:2] == ["/bin/sh", "-c"]  # the compose healthcheck
    pg = by_name(memstack, "StatefulSet")["postgres"]["spec"]["template"]["spec"]["containers"][0]
    assert "SELECT 1" in pg["readinessProbe"]["exec"]["command"][2]  # the kind's own query, as `up` asks
    assert "pg_isready" in pg["livenessProbe"]["exec"]["command"][2]  # the compose healthcheck
    labelled = {"name": "demo", "services": {"web": {
        "image": "demo/web:1", "ports": [{"target": 8080, "protocol": "tcp"}],
        "labels": {"memstack-ops.http.port": "8080", "memstack-ops.http.health": "/healthz"},
        "healthcheck": {"test": ["CMD", "true"], "interval": "5s"}}}}
    web = by_name(k8s_render.render(labelled, "demo"), "Deployment")["web"]["spec"]["template"]["spec"]
    assert web["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    probed = k8s_render.render({"services": {"w": {"image": "w"}}}, "demo", probes_cfg={"w": "tcp:9000"})
    assert by_name(probed, "Deployment")["w"]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"][
        "tcpSocket"] == {"port": 9000}


def test_replicas_are_honoured_and_bad_input_is_named_with_its_fix(tmp_path):
    m = model(tmp_path, "memstack")
    wanted = k8s_render.parse_replicas(["api=3", "worker=1"], m["services"])
    r = k8s_render.render(m, "memstack", wanted)
    hpas, pdbs = by_name(r, "HorizontalPodAutoscaler"), by_name(r, "PodDisruptionBudget")
    assert (hpas["api"]["spec"]["minReplicas"], hpas["api"]["spec"]["maxReplicas"]) == (3, 6)
    assert hpas["worker"]["spec"]["minReplicas"] == 1 and "worker" not in pdbs and "api" in pdbs
    with pytest.raises(ConfigError, match="--replicas names nope.*its services: api, grafana"):
        k8s_render.parse_replicas(["nope=2"], m["services"])
    with pytest.raises(ConfigError, match="api=0.*N >= 1"):
        k8s_render.parse_replicas(["api=0"], m["services"])
    for bad in ("api=x", "api=-1", "api"):
        with pytest.raises(ConfigError, match="write SERVICE=N"):
            k8s_render.parse_replicas([bad], m["services"])
    with pytest.raises(ConfigError, match="--databases 'cluster': use external .* or statefulset"):
        k8s_render.render(m, "memstack", databases="cluster")
    with pytest.raises(ConfigError, match="postgres is a postgres.*cannot have 2 replicas"):
        k8s_render.render(m, "memstack", {"postgres": 2})


def test_a_built_service_gets_composes_image_name_and_a_warning_to_push_it():
    r = k8s_render.render({"name": "demo", "services": {"api": {"build": {"context": "/src"}}}}, "demo")
    c = by_name(r, "Deployment")["api"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "demo-api"
    assert any("demo-api is built here" in w and "registry the cluster can pull from" in w for w in r.warnings)


def test_a_password_on_a_command_line_is_refused_and_one_in_a_healthcheck_is_not_a_probe():
    pw = "S3cret-On-Argv-123456"
    bad = {"services": {"cache": {"image": "acme/cache:1", "command": ["cache-server", "--requirepass", pw]}}}
    with pytest.raises(ConfigError, match="cache: its command has a password") as e:
        k8s_render.render(bad, "demo")
    assert pw not in str(e.value)
    hc = {"services": {"app": {"image": "acme/app:1", "ports": [{"target": 80, "protocol": "tcp"}],
                               "healthcheck": {"test": ["CMD", "curl", "-u", f"me:{pw}", "http://localhost/"]}}}}
    r = k8s_render.render(hc, "demo")
    assert pw not in "".join(r.files().values())
    assert by_name(r, "Deployment")["app"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] == {
        "tcpSocket": {"port": 80}, "periodSeconds": 30, "timeoutSeconds": 30, "failureThreshold": 3}
    assert any("password on its command line" in w for w in r.warnings)


def test_the_yaml_writer_quotes_what_yaml_would_read_as_something_else():
    tricky = {"a": ["yes", "no", "on", "1.0", "007", "", "a: b", "- x", "#c", "x\ny", "$$(V)", "null", "~", "é"],
              "yes": {"n": True}, "0": 1, "empty": {}, "list": []}
    assert yaml.safe_load(k8s_render.to_yaml(tricky)) == tricky


def test_write_overwrites_its_files_atomically_and_leaves_the_others(tmp_path):
    r = k8s_render.render({"services": {"api": {"image": "a", "environment": {"DB_PASSWORD": "x" * 20}}}}, "demo")
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "api.yaml").write_text("stale\n")
    (out / "ingress.yaml").write_text("mine\n")
    written = k8s_render.write(r, out)
    assert sorted(p.name for p in written) == [k8s_render.SECRET_FILE, "api.yaml"]
    assert (out / "ingress.yaml").read_text() == "mine\n"
    assert "kind: Deployment" in (out / "api.yaml").read_text()
    assert sorted(p.name for p in out.iterdir()) == [k8s_render.SECRET_FILE, "api.yaml", "ingress.yaml"]  # no temp


def test_the_task_renders_the_projects_stack_into_k8s_stack(tmp_path, monkeypatch):
    from invoke import Context

    from memstack_ops.tasks import ns

    root = tmp_path / "proj"
    shutil.copytree(REPO / "compose" / "memstack", root / "compose" / "memstack")
    shutil.copytree(REPO / "env" / "memstack", root / "env" / "memstack")
    shutil.copy(REPO / "memstack-ops.toml", root / "memstack-ops.toml")
    env = env_file(tmp_path, "memstack")
    (root / "env/memstack/.env").write_text(env.read_text())
    (root / "env/memstack/.env").chmod(0o600)
    monkeypatch.setenv("MEMSTACK_ROOT", str(root))
    task = ns["k8s.render"]
    task(Context(), replicas=["api=3"], databases="statefulset", overlay="local")
    out = root / "k8s" / "memstack"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [k8s_render.SECRET_FILE] + [f"{s}.yaml" for s in ("api", "worker", "grafana", "prometheus", "neo4j",
                                                           "postgres", "redis")])
    api = list(yaml.safe_load_all((out / "api.yaml").read_text()))
    assert [d["spec"]["minReplicas"] for d in api if d["kind"] == "HorizontalPodAutoscaler"] == [3]
    assert "kind: StatefulSet" in (out / "postgres.yaml").read_text()
    assert secret("memstack", "POSTGRES_PASSWORD") not in "".join(p.read_text() for p in out.iterdir())
    from invoke import Exit

    with pytest.raises(Exit, match="--databases 'nope'"):
        task(Context(), databases="nope", overlay="local")
