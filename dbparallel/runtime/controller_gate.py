"""Where the Ray Train controllers of a run's blocks with replicas announce themselves and their
worker groups' placement groups, and a stop finds them (block_group.py).

A group's controller starts in a process of its own, seconds after the driver asked for it;
the driver does not get its handle from Ray Train, and a stop may come before the controller
has started or while it starts. One actor takes both the controllers' announcements and the
stops, one call at a time: a stop gets the handle of a controller that announced itself, and a
controller that announces itself after its block's stop is killed there, before it starts any
worker. Neither side waits for the other.

A killed controller leaves the placement group of its workers reserved for as long as the job
lives (Ray Train's own cleaner of it asks the state API, which a program that joined Ray itself
may not reach): each controller reports the one it placed its workers in, and a stop removes
it. A stop that comes while a controller places a group, which it has not reported yet, is
carried out as the controller reports it (or starts a group again, where that one failed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray


class ControllerGate:
    """The blocks' controllers, their placement groups and the blocks stopped; ``end`` kills a
    controller and removes its placement group, if any (``end_controller`` in the actor
    ``start_gate`` starts)."""

    def __init__(self, end: Callable[[Any, Any], None]):
        self._end = end
        self._controllers: dict[int, Any] = {}
        self._placed: dict[int, Any] = {}  # the placement group of each block's workers
        self._starting: set[int] = set()  # the blocks whose controller places a group now
        self._stopped: set[int] = set()

    def announce(self, block: int, controller: Any) -> bool:
        """Block ``block``'s controller as it starts; False where the block was stopped (the
        controller is killed)."""
        if block in self._stopped:
            self._end(controller, None)
            return False
        self._controllers[block] = controller
        return True

    def starting(self, block: int) -> bool:
        """Block ``block``'s controller is about to place a worker group; False where the
        block was stopped while it placed the last one, which failed (it is killed)."""
        if block in self._stopped:
            self._end(self._controllers.pop(block, None), None)
            return False
        self._starting.add(block)
        return True

    def placed(self, block: int, placement_group: Any) -> bool:
        """Block ``block``'s workers started in ``placement_group``; False where the block
        was stopped meanwhile (its controller is killed, the placement group removed)."""
        self._starting.discard(block)
        if block in self._stopped:
            self._end(self._controllers.pop(block, None), placement_group)
            return False
        self._placed[block] = placement_group
        return True

    def stop(self, block: int) -> tuple[Any, Any] | None:
        """Stop block ``block``: its controller to kill and the placement group to remove
        then (None: none placed yet); None where no controller has announced itself, or it
        places a group now (it is killed as it reports it)."""
        self._stopped.add(block)
        if block in self._starting:
            return None
        controller = self._controllers.pop(block, None)
        placement_group = self._placed.pop(block, None)
        return None if controller is None else (controller, placement_group)


def end_controller(controller: Any, placement_group: Any) -> None:
    """Kill ``controller``, then remove ``placement_group``: killed first, it places no other
    group; the workers in the group end with it."""
    if controller is not None:
        ray.kill(controller, no_restart=True)
    if placement_group is not None:
        ray.util.remove_placement_group(placement_group)


def start_gate() -> Any:
    """The run's gate: an actor of the driver's, which takes no CPU."""
    return ray.remote(num_cpus=0)(ControllerGate).remote(end_controller)
