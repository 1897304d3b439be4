"""A rank that only writes its pid to OUT_DIR/pid<rank> and sleeps: no torch import, so it is running within
moments of torchrun starting it, which lets the timeout and Ctrl-C tests end a group known to be running."""

import os
import sys
import time

with open(os.path.join(sys.argv[1], f"pid{os.environ['RANK']}"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(600)
