"""``python -m bench``: run the scenarios, write JSON + markdown + chart, print the table.

Examples::

    python -m bench                      # everything (about 15 minutes on 2 cores)
    python -m bench --smoke              # seconds: proves the harness works
    python -m bench -s floor,quart-chat/hypercorn -c fanout,light
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from .loadgen import Timing
from .run import SCENARIOS, Progress, run
from .servers import SPECS

DEFAULT_OUT = pathlib.Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny loads, seconds in total")
    parser.add_argument("-s", "--servers", default=",".join(SPECS),
                        help=f"comma-separated, from: {', '.join(SPECS)}")
    parser.add_argument("-c", "--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("-o", "--out", type=pathlib.Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT}; smoke: a temp folder)")
    parser.add_argument("--time-limit", type=float, default=1080.0,
                        help="seconds after which no new scenario starts (default 1080)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument("--fanout-start", type=float, default=None,
                        help="publishes/s of the first fan-out step (x subscribers)")
    parser.add_argument("--fanout-rounds", type=int, default=2,
                        help="run fan-out this many times per server, keep the best (default 2)")
    parser.add_argument("--fanout-steps", type=int, default=None, help="most fan-out steps")
    parser.add_argument("--scale-server", default="quart-chat/hypercorn+batch")
    parser.add_argument("--scale-rate", type=float, default=None,
                        help="publishes/s in the scale scenario (x500 deliveries)")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--report", type=pathlib.Path, default=None, metavar="RESULTS_JSON",
                        help="only render the table and chart of an earlier run")
    args = parser.parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text())
        out = args.out or args.report.parent
        return _write(results, out)

    specs = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for name in specs:
        if name not in SPECS:
            parser.error(f"unknown server {name!r}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    timing = Timing.smoke() if args.smoke else Timing()
    if args.step_seconds:
        timing.step_seconds = args.step_seconds
    if args.fanout_start:
        timing.fanout_start = args.fanout_start
    if args.fanout_steps:
        timing.fanout_max_steps = args.fanout_steps
    timing.extra["scale_server"] = args.scale_server
    timing.extra["fanout_rounds"] = 1 if args.smoke else args.fanout_rounds
    timing.extra["scale_rate"] = args.scale_rate or (20.0 if args.smoke else 60.0)
    out = args.out
    if out is None:
        if args.smoke:
            import tempfile

            out = pathlib.Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        else:
            out = DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)

    import uvloop

    results = uvloop.run(run(specs, scenarios, timing, Progress(args.quiet),
                             time_limit=args.time_limit, pin=not args.no_pin))
    results["meta"]["command"] = "python -m bench " + " ".join(sys.argv[1:] if argv is None
                                                                else argv)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return _write(results, out)


def _write(results: dict, out: pathlib.Path) -> int:  # type: ignore[type-arg]
    from .report import chart, markdown

    table = markdown(results)
    (out / "results.md").write_text(table)
    try:
        chart(results, out / "fanout.png")
    except ImportError as exc:  # matplotlib is optional for the smoke run
        print(f"no chart: {exc}", file=sys.stderr)
    print(table)
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
