"""The edge proxy's config generator and the start-first rules (memstack_ops/proxy.py, rollout.py):
pure functions of the rendered compose model."""

from __future__ import annotations

import pytest

from memstack_ops.errors import ConfigError, Refused
from memstack_ops.proxy import NO_UPSTREAM, Maintenance, Route, overlay, proxy_service, render, routes
from memstack_ops.rollout import check_rollable, grace, strategy

MODEL = {"services": {
    "proxy": {"image": "local/nginx:1", "labels": {"memstack-ops.proxy": "nginx"},
              "ports": [{"target": 80, "published": "8080"}]},
    "api": {"image": "app:1", "labels": {"memstack-ops.http.port": "8000", "memstack-ops.http.health": "/health"}},
    "docs": {"image": "app:1", "labels": {"memstack-ops.http.port": "8080", "memstack-ops.http.path": "/docs/"}},
    "worker": {"image": "app:1", "labels": {"memstack-ops.rollout": "start-first"}, "stop_grace_period": "20s"},
    "db": {"image": "postgres:16"},
}}


def test_routes_come_from_the_labels():
    assert routes(MODEL) == [Route("api", 8000, "/", 80, "/health"), Route("docs", 8080, "/docs/", 80, "")]
    assert proxy_service(MODEL) == "proxy"


def test_render_points_each_route_at_its_upstream_addresses_and_a_service_without_any_at_a_502():
    text = render(routes(MODEL), {"api": ["p-api-2:8000", "tasks.api:8000"]})
    assert "upstream ms_api {\n    server p-api-2:8000;\n    server tasks.api:8000;\n}" in text
    assert f"upstream ms_docs {{\n    server {NO_UPSTREAM};\n}}" in text
    assert "location / {\n        proxy_pass http://ms_api;" in text
    assert "location /docs/ {\n        proxy_pass http://ms_docs;" in text
    assert text.count("listen 80;") == 1 and "return 503" not in text


def test_maintenance_answers_503_everywhere_but_the_proxy_ping():
    text = render(routes(MODEL), {"api": ["a:8000"]}, Maintenance(True, "back soon"))
    assert "location / { return 503; }" in text and "proxy_pass" not in text
    assert "location = /__memstack-ops/ping" in text and "error_page 503 /maintenance.html;" in text


def test_an_upstream_address_that_is_not_host_port_is_refused():
    with pytest.raises(ConfigError):
        render(routes(MODEL), {"api": ["a:8000; include /etc/passwd"]})


def test_two_services_on_one_path_are_refused():
    model = {"services": {"a": {"labels": {"memstack-ops.http.port": "1"}},
                          "b": {"labels": {"memstack-ops.http.port": "2"}}}}
    with pytest.raises(ConfigError, match="both claim path /"):
        routes(model)


def test_strategies_and_grace():
    assert [strategy(MODEL, s) for s in MODEL["services"]] == ["recreate", "start-first", "start-first",
                                                               "start-first", "recreate"]
    assert check_rollable(MODEL, list(MODEL["services"])) == ["api", "docs", "worker"]
    assert grace(MODEL["services"]["worker"]) == 20.0 and grace(MODEL["services"]["api"]) == 10.0


@pytest.mark.parametrize("change, why", [
    ({"container_name": "the-api"}, "container_name: the-api"),
    ({"ports": [{"target": 8000, "published": "8000"}]}, "publishes host port(s) 8000->8000"),
    ({"ports": [{"target": 8000, "host_ip": "127.0.0.1"}]}, "publishes host port(s) random->8000"),
], ids=["container_name", "published port", "random host port"])
def test_a_start_first_service_that_cannot_run_twice_is_refused_with_the_fix(change, why):
    model = {"services": {**MODEL["services"], "api": {**MODEL["services"]["api"], **change}}}
    with pytest.raises(Refused, match="nothing was changed") as e:
        check_rollable(model, ["api"])
    assert why in str(e.value)


def test_a_database_or_the_proxy_labelled_start_first_is_refused():
    model = {"services": {"db": {"image": "postgres:16", "labels": {"memstack-ops.rollout": "start-first"}},
                          "proxy": {"image": "nginx", "labels": {"memstack-ops.proxy": "nginx",
                                                                 "memstack-ops.rollout": "start-first"}}}}
    with pytest.raises(Refused) as e:
        check_rollable(model, ["db", "proxy"])
    assert "db is a postgres service" in str(e.value) and "proxy is the edge proxy" in str(e.value)


def test_the_overlay_mounts_the_config_folder_read_only():
    text = overlay("proxy", "/srv/x/proxy/p")
    assert '"source": "/srv/x/proxy/p", "target": "/etc/nginx/conf.d", "read_only": true' in text


AGENTCHAT_LIKE = {"services": {
    "nginx": {"image": "nginx", "labels": {"memstack-ops.proxy": "nginx"}},
    "backend": {"labels": {"memstack-ops.http.port": "7860", "memstack-ops.http.path": "/api/",
                           "memstack-ops.http.listen-all": "7860", "memstack-ops.http.max-body": "50m"}},
    "frontend": {"labels": {"memstack-ops.http.port": "8090", "memstack-ops.http.listen-all": "8090"}},
    "svc": {"labels": {"memstack-ops.http.port": "8089", "memstack-ops.http.path": "/sanic/",
                       "memstack-ops.http.strip-path": "true", "memstack-ops.http.read-timeout": "600s"}},
}}


def test_a_service_keeps_its_own_port_on_the_proxy_and_a_prefix_can_be_stripped():
    rts = routes(AGENTCHAT_LIKE)
    assert [(r.service, r.listen, r.path, r.strip) for r in rts] == [
        ("backend", 80, "/api/", False), ("backend", 7860, "/", False), ("frontend", 80, "/", False),
        ("frontend", 8090, "/", False), ("svc", 80, "/sanic/", True)]
    text = render(rts, {"backend": ["b-1:7860"], "frontend": ["f-1:8090"], "svc": ["s-1:8089"]})
    assert text.count("upstream ms_backend {") == 1  # one upstream per service, however many routes
    assert [ln.strip() for ln in text.splitlines() if ln.strip().startswith("listen")] == \
        ["listen 80;", "listen 7860;", "listen 8090;"]
    assert "location /sanic/ {\n        proxy_pass http://ms_svc/;" in text  # /sanic/x arrives as /x
    assert "location /api/ {\n        proxy_pass http://ms_backend;" in text  # /api/x arrives as /api/x
    assert "client_max_body_size 50m;" in text and "proxy_read_timeout 600s;" in text
    # WebSocket upgrades passed on, streamed answers not buffered
    assert "map $http_upgrade $ms_connection_upgrade {" in text and "proxy_buffering off;" in text


@pytest.mark.parametrize("label, value, why", [
    ("memstack-ops.http.strip-path", "maybe", "must be true or false"),
    ("memstack-ops.http.max-body", "50 MB", "must be like 50m"),
    ("memstack-ops.http.read-timeout", "10;", "must be like 600s"),
    ("memstack-ops.http.listen-all", "http", "must be a port number"),
])
def test_bad_route_labels_are_refused_naming_the_label(label, value, why):
    model = {"services": {"a": {"labels": {"memstack-ops.http.port": "1", "memstack-ops.http.path": "/a/",
                                           label: value}}}}
    with pytest.raises(ConfigError, match=why) as e:
        routes(model)
    assert label in str(e.value)


def test_with_a_resolver_a_dns_name_is_resolved_per_request_and_a_failed_connection_tries_the_next_address():
    rts = [Route("api", 8000, "/", 80, "/health"), Route("docs", 8080, "/docs/", 80, "", strip=True),
           Route("static", 80, "/s/", 80)]
    text = render(rts, {"api": ["tasks.api:8000"], "docs": ["tasks.docs:8080"], "static": ["10.0.0.5:80"]},
                  resolver="127.0.0.11")
    assert "resolver 127.0.0.11 valid=1s ipv6=off;" in text
    # open-source nginx re-resolves only a name it gets through a variable: no upstream block for those
    assert "upstream ms_api" not in text and "upstream ms_docs" not in text
    assert 'set $ms_api "tasks.api:8000";\n        proxy_pass http://$ms_api;' in text
    assert "proxy_next_upstream error timeout;" in text and "proxy_connect_timeout 2s;" in text
    # with a variable proxy_pass passes the URI as is: the prefix is stripped by a rewrite
    assert "rewrite ^/docs/(.*)$ /$1 break;\n        proxy_pass http://$ms_docs;" in text
    # an address that is already an IP needs no resolving: a plain upstream block
    assert "upstream ms_static {\n    server 10.0.0.5:80;\n}" in text and "proxy_pass http://ms_static;" in text
    # without a resolver nothing changes
    plain = render(rts, {"api": ["tasks.api:8000"]})
    assert "resolver" not in plain and "upstream ms_api {\n    server tasks.api:8000;\n}" in plain
    with pytest.raises(ConfigError, match="not a host:port"):
        render(rts[:1], {"api": ["tasks.api:8000;evil"]}, resolver="127.0.0.11")
