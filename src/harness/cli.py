"""What every command line here shares: a parser whose errors are one line, and number types that say what is wrong.

Bad input must fail before any work with one line naming the problem and exit status 2 (argparse's own error
prints a usage block first); the commands catch UsageError, print it, and return EXIT_USAGE.
"""

import argparse

# Exit statuses of the commands that run sweeps (README "Reliability"; benchmark --help).
EXIT_OK = 0  # every configuration measured, or out of memory (an OOM row is a result, as in a context sweep)
EXIT_FAILED = 1  # at least one configuration ended in an error, a crash or a non-finite loss
EXIT_USAGE = 2  # bad input, refused before any work
EXIT_OUTPUT = 3  # a row could not be written (a full disk): the file keeps every earlier row whole
EXIT_INTERRUPTED = 130  # Ctrl-C: the finished rows are in the file
FINE_STATUSES = ("ok", "OOM")


def sweep_exit_status(records: list[dict]) -> int:
    """EXIT_OK when every record's status is ok or OOM, else EXIT_FAILED."""
    return EXIT_OK if all(r.get("status") in FINE_STATUSES for r in records) else EXIT_FAILED


class UsageError(Exception):
    pass


def resolve_device(requested: str) -> str:
    """--device: 'auto' is cuda when torch sees a GPU, else cpu; 'cuda' without one is a usage error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device")
    return requested


def first_paragraph(doc: str) -> str:
    """A module docstring's first paragraph on one line: a --help description that ends where its sentence does."""
    return " ".join(doc.strip().split("\n\n")[0].split())


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_and_resolve(build_parser, resolve, argv, name: str):
    """(args, resolved) from the command line, or None once the one-line error has been printed (exit EXIT_USAGE)."""
    import sys

    try:
        args = build_parser().parse_args(argv)
        return args, resolve(args)
    except UsageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return None
