"""The gate of the groups' Ray Train controllers (runtime/controller_gate.py), without Ray: a
stop finds the controller that announced itself and its workers' placement group, and kills
one that announces itself, or reports a placement group, later."""

from __future__ import annotations

from typing import Any

from dbparallel.runtime.controller_gate import ControllerGate


def _gate() -> tuple[ControllerGate, list[tuple[Any, Any]]]:
    ended: list[tuple[Any, Any]] = []
    return ControllerGate(lambda controller, pg: ended.append((controller, pg))), ended


def test_a_stop_gets_the_controller_that_announced_itself() -> None:
    gate, ended = _gate()
    assert gate.announce(0, "controller 0") is True
    assert gate.announce(1, "controller 1") is True
    assert gate.stop(0) == ("controller 0", None)  # no worker group placed yet
    assert gate.stop(0) is None  # handed out once: the stop kills it
    assert ended == []


def test_a_controller_that_announces_itself_after_its_stop_is_killed() -> None:
    gate, ended = _gate()
    assert gate.stop(1) is None  # still starting
    assert gate.announce(0, "controller 0") is True  # another block's: not stopped
    assert gate.announce(1, "controller 1") is False
    assert ended == [("controller 1", None)]
    assert gate.stop(0) == ("controller 0", None)


def test_a_stop_gets_the_placement_group_of_the_latest_worker_group() -> None:
    gate, ended = _gate()
    gate.announce(0, "controller")
    for pg in ("pg 1", "pg 2"):  # Ray Train started the group again in a new one
        assert gate.starting(0) is True
        assert gate.placed(0, pg) is True
    assert gate.stop(0) == ("controller", "pg 2")
    assert ended == []


def test_a_stop_while_a_worker_group_is_placed_ends_it_as_it_is_reported() -> None:
    gate, ended = _gate()
    gate.announce(0, "controller 0")
    gate.announce(1, "controller 1")
    gate.starting(0)
    gate.starting(1)
    assert gate.stop(0) is None  # its placement group is not known yet
    assert gate.placed(1, "pg 1") is True  # another block's: not stopped
    assert gate.placed(0, "pg 0") is False
    assert ended == [("controller 0", "pg 0")]
    assert gate.stop(0) is None


def test_a_stop_while_a_worker_group_fails_to_start_ends_the_next_start() -> None:
    gate, ended = _gate()
    gate.announce(0, "controller")
    gate.starting(0)
    assert gate.stop(0) is None
    assert gate.starting(0) is False  # the start failed (Ray Train removed its group)
    assert ended == [("controller", None)]
