"""How often, and for how long, a sweep prepares its data: runs `vantage-sweep ARGS...` in this
process with `prepare_data` counted and timed, then prints the calls and the wall time.

    python bench/sweep_data.py lr --model tiny --data spider:../shared/data/spider --trials 4 \
        --storage sqlite:////tmp/b.db --steps-per-trial 20

(docs/benchmarks.md, "Data preparation shared by trials".)"""

import sys
import time

from vantage_core.data import prepare

calls: list[float] = []
_real = prepare.prepare_data


def counted(*a, **k):
    t = time.perf_counter()
    try:
        return _real(*a, **k)
    finally:
        calls.append(time.perf_counter() - t)


prepare.prepare_data = counted  # studies.objective imports it from the module when first needed

if __name__ == "__main__":
    from studies.cli import main
    t0 = time.perf_counter()
    try:
        main(sys.argv[1:])   # exits
    finally:
        print(f"wall {time.perf_counter() - t0:.1f}s; prepare_data called {len(calls)}x: "
              + ", ".join(f"{c:.2f}s" for c in calls), file=sys.stderr)
