"""Print the benchmark's table for a results file, with the environment it was measured in.

    python -m src.profiling.table RESULTS [--columns compact]
"""

import sys

from src.harness.cli import EXIT_USAGE, OneLineParser, UsageError
from src.harness.results import read_records
from src.reports.table import COLUMN_VIEWS, environment_lines, format_table


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m src.profiling.table", description=__doc__.split("\n")[0])
    parser.add_argument("results", metavar="RESULTS", help="a results file (.csv, or .jsonl) written by --output")
    parser.add_argument("--columns", choices=COLUMN_VIEWS, default="default",
                        help="default: every column, the original benchmark's first; compact: a dozen that fit a "
                             "terminal")
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"table: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        records, warnings = read_records(args.results)
    except (OSError, ValueError) as error:
        print(f"table: error: cannot read {args.results}: {error}", file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:
        print(f"table: warning: {warning}", file=sys.stderr)
    if not records:
        print(f"table: error: {args.results} has no rows", file=sys.stderr)
        return EXIT_USAGE
    print("Environment: " + "; ".join(environment_lines(records)) + "\n")
    print(format_table(records, args.columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
