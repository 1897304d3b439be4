"""Steps of one configuration as they finish, as a tqdm bar on stderr: a long configuration shows it is alive.

On when stderr is a terminal, or when asked (LMBENCH_PROGRESS=on; =off silences it); shown only for a configuration
that runs longer than PROGRESS_DELAY_S. A sweep's child writes to a file, not a terminal, so the parent decides and
hands the child its own stderr as an extra file descriptor (PROGRESS_FD_VARIABLE). The bar is updated between steps,
after the step's timer has stopped, never inside a timed region.
"""

import os
import sys

PROGRESS_VARIABLE = "LMBENCH_PROGRESS"  # on | off | auto (default: on when stderr is a terminal)
PROGRESS_FD_VARIABLE = "LMBENCH_PROGRESS_FD"  # set by the sweep's parent for its child: where the bar goes
PROGRESS_DELAY_S = 3.0  # a configuration shorter than this shows no bar: the sweep's own lines are enough


def wanted(stream=sys.stderr) -> bool:
    choice = os.environ.get(PROGRESS_VARIABLE, "auto")
    return choice == "on" or (choice == "auto" and stream.isatty())


class StepProgress:
    """`update()` after each step, `close()` at the end; a no-op when progress is off or tqdm is not installed.
    (Left unclosed by a failing step, tqdm closes the bar when the object is collected.)"""

    def __init__(self, total: int, label: str):
        self._bar = None
        fd = os.environ.get(PROGRESS_FD_VARIABLE)
        stream = os.fdopen(int(fd), "w", closefd=False) if fd else sys.stderr
        if not (fd or wanted(stream)):
            return
        try:
            from tqdm import tqdm  # a dependency in pyproject; imported here so a bare environment still runs
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=label, unit="step", delay=PROGRESS_DELAY_S, file=stream, leave=False,
                         dynamic_ncols=True)

    def update(self) -> None:
        if self._bar is not None:
            self._bar.update()

    def close(self) -> None:
        if self._bar is not None:
            shown = self._bar.format_dict["elapsed"] >= self._bar.delay  # a short configuration stays without a bar
            if shown and self._bar.last_print_n < self._bar.n:
                self._bar.refresh()  # tqdm draws at most every 0.1 s: the last steps may not have been shown yet
            self._bar.close()
