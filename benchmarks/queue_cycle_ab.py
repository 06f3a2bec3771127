"""One admission cycle, this checkout's engine against an older one, alternating in one process.

    git archive <commit> crater_hub | tar -x -C /tmp/before
    .venv/bin/python -m benchmarks.queue_cycle_ab /tmp/before [--runs 21]
                                                  [--strategy best_effort_fifo|strict_fifo]

Why: on a machine shared with other work, two benchmark processes a minute apart differ by
more than a change to the engine; calls that alternate in one process see the same load. The
older package is imported under another name (``crater_before``), given its own ``QueuedJob``s
and ``Ranking`` of the same input (``benchmarks.queue_cycle.cycle``); both must admit and
preempt the same. Prints the median and best CPU time (``time.process_time``) of each.
"""

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.queue_cycle import NOW, cycle  # noqa: E402
from crater_hub.queue import engine  # noqa: E402

FIELDS = ("id", "owner", "priority", "best_effort", "accelerator", "gpus", "cpu_m", "mem_b",
          "submitted", "runtime")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a folder holding the older crater_hub package")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--strategy", default="best_effort_fifo",
                        choices=("best_effort_fifo", "strict_fifo"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    shutil.copytree(Path(args.before) / "crater_hub", scratch / "crater_before")
    sys.path.insert(0, str(scratch))
    old = importlib.import_module("crater_before.queue.engine")

    queued, active, nodes, quotas, servers = cycle(100_000, 1000, 5000)
    old_queued = [old.QueuedJob(**{f: getattr(j, f) for f in FIELDS}) for j in queued]
    sides = {"before": (old.schedule, old.Ranking(old_queued)),
             "after": (engine.schedule, engine.Ranking(queued))}
    cpu, decided = {"before": [], "after": []}, {}
    for run in range(args.runs):
        for name in ("before", "after") if run % 2 else ("after", "before"):
            schedule, ranking = sides[name]
            began = time.process_time()
            decided[name] = schedule(ranking, active, nodes, quotas, servers, NOW, 600,
                                     args.strategy)
            cpu[name].append(time.process_time() - began)
    assert decided["before"].admit == decided["after"].admit
    assert decided["before"].preempt == decided["after"].preempt
    for name, times in cpu.items():
        print(f"{name:>6}: CPU median {statistics.median(times) * 1000:6.1f} ms   best "
              f"{min(times) * 1000:6.1f} ms   ({len(times)} runs, alternating)")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
