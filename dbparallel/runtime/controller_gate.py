"""Where the Ray Train controllers of a run's blocks with replicas announce themselves, and a
stop finds them (block_group.py).

A group's controller starts in a process of its own, seconds after the driver asked for it;
the driver does not get its handle from Ray Train, and a stop may come before the controller
has started or while it starts. One actor takes both the controllers' announcements and the
stops, one call at a time: a stop gets the handle of a controller that announced itself, and a
controller that announces itself after its block's stop is killed there, before it starts any
worker. Neither side waits for the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray


class ControllerGate:
    """The blocks' controllers and the blocks stopped; ``kill`` ends a controller (Ray's kill
    in the actor ``start_gate`` starts)."""

    def __init__(self, kill: Callable[[Any], None]):
        self._kill = kill
        self._controllers: dict[int, Any] = {}
        self._stopped: set[int] = set()

    def announce(self, block: int, controller: Any) -> bool:
        """Block ``block``'s controller as it starts; False where the block was stopped (the
        controller is killed)."""
        if block in self._stopped:
            self._kill(controller)
            return False
        self._controllers[block] = controller
        return True

    def stop(self, block: int) -> Any:
        """Stop block ``block``: the handle of its controller to kill, None where none has
        announced itself (one that does later is killed as it does)."""
        self._stopped.add(block)
        return self._controllers.pop(block, None)


def _kill(actor: Any) -> None:
    ray.kill(actor, no_restart=True)


def start_gate() -> Any:
    """The run's gate: an actor of the driver's, which takes no CPU."""
    return ray.remote(num_cpus=0)(ControllerGate).remote(_kill)
