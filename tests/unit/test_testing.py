"""memstack_ops/testing.py: helpers the tests and benchmarks build on."""

from __future__ import annotations

from memstack_ops.testing import free_port


def test_test_ports_come_from_below_the_ephemeral_range_and_are_not_handed_out_twice():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(20000 <= p <= 32000 for p in ports)
