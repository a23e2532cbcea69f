"""The gate of the groups' Ray Train controllers (runtime/controller_gate.py), without Ray: a
stop finds the controller that announced itself, and kills one that announces itself later."""

from __future__ import annotations

from dbparallel.runtime.controller_gate import ControllerGate


def test_a_stop_gets_the_controller_that_announced_itself() -> None:
    killed: list[str] = []
    gate = ControllerGate(killed.append)
    assert gate.announce(0, "controller 0") is True
    assert gate.announce(1, "controller 1") is True
    assert gate.stop(0) == "controller 0"
    assert gate.stop(0) is None  # handed out once: the stop kills it
    assert killed == []


def test_a_controller_that_announces_itself_after_its_stop_is_killed() -> None:
    killed: list[str] = []
    gate = ControllerGate(killed.append)
    assert gate.stop(1) is None  # still starting
    assert gate.announce(0, "controller 0") is True  # another block's: not stopped
    assert gate.announce(1, "controller 1") is False
    assert killed == ["controller 1"]
    assert gate.stop(0) == "controller 0"
