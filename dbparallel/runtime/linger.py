"""A finished run's last seconds (``metrics.linger_s``): its final scores, the assembly gauges,
are served a while longer, after report.json is written, so that a scraper reads them.

A gauge lives as long as the process that serves it (runtime/metrics.py): a Ray run's assembly
actor, a local run's HTTP endpoint. Ray's node agent exports it every export interval (10 s on
a cluster) and Prometheus scrapes every 15-30 s, so a process that ended as soon as it had
answered left the final scores to chance. The wait ends early, without failing the run, on
Ctrl-C or SIGTERM (``dbparallel stop``): the run is done by then.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def linger(seconds: float, where: str, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait ``seconds`` while the final scores are served ``where`` (said in the line printed);
    True once the whole wait is over (at once for 0), False where a Ctrl-C or SIGTERM
    (a KeyboardInterrupt, cli_stop.py) ended it early."""
    if seconds <= 0:
        return True
    print(f"metrics: the final scores stay served {where} for {seconds:g} s, for a scrape "
          f"(metrics.linger_s; metrics.linger_s=0 ends a run at once; Ctrl-C or `dbparallel "
          f"stop` ends it now; report.json is written)", flush=True)
    try:
        sleep(seconds)
    except KeyboardInterrupt:  # the run is done: nothing to resume, nothing failed
        print("metrics: stopped serving the final scores; the run is done", flush=True)
        return False
    return True
