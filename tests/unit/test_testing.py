"""memstack_ops/testing.py: helpers the tests and benchmarks build on."""

from __future__ import annotations

from memstack_ops.testing import free_port


def test_test_ports_come_from_below_the_ephemeral_range_and_are_not_handed_out_twice():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(20000 <= p <= 32000 for p in ports)


def test_each_xdist_worker_picks_test_ports_from_its_own_share_of_the_range(monkeypatch):
    from memstack_ops.testing import port_range

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        shares.append(port_range())
        assert all(shares[-1][0] <= free_port() <= shares[-1][1] for _ in range(20))
    assert shares == [(20000, 25999), (26000, 31999)]
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    assert port_range() == (20000, 31999)
