"""Report of a benchmark sweep, or an A/B comparison of two sweeps: a markdown summary and PNG plots.

    python -m src.profiling.report RESULTS [--out DIR]
        one sweep: a table per configuration, failed rows, warm-up check, and four plots
        (phase_times.png, throughput.png, memory.png, warmup.png)
    python -m src.profiling.report A B [--out DIR] [--min_effect 0.02] [--ignore FIELD ...] [--pair_on FIELD]
        B against A: per common configuration the ratio of median step times B/A with a 95% bootstrap CI
        and a verdict (see src/reports/compare.py), what differs in the environment, and ratios.png;
        where both rows ran with --trace, where the time went: ms per step by category, idle, kernels
    python -m src.profiling.report RESULTS --pair_on FIELD
        the same, for one file whose rows hold two values of FIELD (A: its first row's value)

--pair_on FIELD pairs rows that differ on purpose in FIELD (backend: ours against torchtitan or hf_llama;
attention; precision) by every other config field, and names both values in each pair's label.

Writes DIR/report.md (also printed) and the PNGs, nothing else and nowhere else. DIR defaults to
`<RESULTS name>_report/` next to RESULTS (`<A name>_vs_<B name>_report/` next to A), so that a report sits
beside the data it describes. Problems that leave nothing to report (a missing or unreadable file, a file
with no rows, two files with no configuration in common, an --out that cannot be written) print one line on
stderr and exit with status 2 before anything is written.
"""

import argparse
import dataclasses
import os
import sys

from src.reports import compare, distributed
from src.reports.report import (InputError, check_output_dir, comparison_report, load, output_dir, sweep_report,
                                why_nothing_in_common)
from src.harness.results import CONFIG_FIELDS


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise InputError(message)


def parse_args(argv):
    parser = OneLineParser(prog="python -m src.profiling.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="a results file, or two to compare (A B)")
    parser.add_argument("--out", help="directory for report.md and the plots (default: next to RESULTS)")
    parser.add_argument("--min_effect", type=float, default=compare.MIN_EFFECT,
                        help="smallest |B/A - 1| reported as a difference (default %(default)s)")
    parser.add_argument("--ignore", action="append", default=[], choices=CONFIG_FIELDS, metavar="FIELD",
                        help="also match A and B across this config field, e.g. precision (repeatable)")
    parser.add_argument("--pair_on", choices=CONFIG_FIELDS, metavar="FIELD",
                        help="pair rows that differ in this config field and match on every other, e.g. backend")
    parser.add_argument("--link_peak_gbps", type=float,
                        help="the GPU link's peak bandwidth in GB/s, drawn on the collectives' bus bandwidth plot")
    args = parser.parse_args(argv)
    if len(args.results) > 2:
        raise InputError("give one results file, or two to compare")
    if not 0 <= args.min_effect < 1:
        raise InputError(f"--min_effect must be in [0, 1), got {args.min_effect}")
    if args.link_peak_gbps is not None and not 0 < args.link_peak_gbps < float("inf"):
        raise InputError(f"--link_peak_gbps must be a positive number, got {args.link_peak_gbps}")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        loaded = [load(path) for path in args.results]
        paths = list(args.results)
        if args.pair_on and len(loaded) == 1:  # one file holding both sides: split it on the field
            sweep = loaded[0]
            try:
                values, records_a, records_b = compare.split_on(
                    [r for r in sweep.records if not distributed.is_collective(r)], args.pair_on)
            except ValueError as error:
                raise InputError(str(error)) from None
            loaded = [dataclasses.replace(sweep, records=records_a), dataclasses.replace(sweep, records=records_b,
                                                                                          warnings=[])]
            paths = [f"{paths[0]} ({args.pair_on} {value})" for value in values]
        if len(loaded) == 2:  # A/B compares training steps; collective rows have their own report
            loaded = [dataclasses.replace(sweep, records=[r for r in sweep.records if not distributed.is_collective(r)])
                      for sweep in loaded]
            for path, sweep in zip(paths, loaded):
                if not sweep.records:
                    raise InputError(f"{path} has only collectives rows; the A/B comparison is of benchmark rows")
        out = output_dir(args)
        check_output_dir(out)
        paired = (args.pair_on,) if args.pair_on else ()
        ignored = tuple(dict.fromkeys(compare.IGNORED_FIELDS + tuple(args.ignore) + paired))
        if len(loaded) == 2 and not compare.match(loaded[0].records, loaded[1].records, ignored)[0]:
            raise InputError(f"{paths[0]} and {paths[1]} have "
                             + why_nothing_in_common(loaded[0].records, loaded[1].records, ignored))
    except InputError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    if len(paths) == 1:
        text = sweep_report(args.results[0], loaded[0].records, loaded[0].warnings, out, args.link_peak_gbps)
    else:
        warnings = loaded[0].warnings + loaded[1].warnings
        text = comparison_report(paths, loaded[0], loaded[1], ignored, args.min_effect, out, args.pair_on or "")
        if warnings:
            text += "\n## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"report written to {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
