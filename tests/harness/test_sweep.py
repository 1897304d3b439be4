"""The sweep's child processes: a killed parent takes its worker and its temporary folder with it; later sweeps
remove the folders of sweeps that are gone, of every kind."""

import os
import signal
import subprocess
import sys
import time

from src.harness.lifetime import TEMP_PREFIX, remove_folders_of, remove_orphaned_folders
from tests.harness.processes import running as _running


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def test_killing_the_parent_ends_its_worker_and_leaves_no_temporary_folder(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "src.profiling.benchmark", "--device", "cpu", "--sizes", "tiny", "--isolate",
           "process", "--warmup_steps", "0", "--benchmark_steps", "200000", "--context_length", "8"]
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (_children(parent.pid) and list(tmp_path.glob(f"{TEMP_PREFIX}*"))):
            time.sleep(0.1)
        (worker,) = _children(parent.pid)
        time.sleep(1.0)  # let the worker get into its work
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 60  # the watchdog polls every 0.5 s; the margin is for a loaded machine
        while time.time() < deadline and (_running(worker) or list(tmp_path.glob(f"{TEMP_PREFIX}*"))):
            time.sleep(0.1)
        assert not _running(worker)
        assert list(tmp_path.glob(f"{TEMP_PREFIX}*")) == []
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in _children(parent.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_sweep_removes_only_the_folders_of_sweeps_that_are_gone(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphans = [tmp_path / f"{TEMP_PREFIX}{kind}{gone.pid}-abc123" for kind in ("", "launch-", "collectives-")]
    ours = tmp_path / f"{TEMP_PREFIX}launch-{os.getpid()}-def456"
    unrelated = tmp_path / "lmbench-notes"
    for folder in (*orphans, ours, unrelated):
        folder.mkdir()
        (folder / "record.json").write_text("{}")
    assert sorted(remove_orphaned_folders(str(tmp_path))) == sorted(map(str, orphans))
    assert not any(o.exists() for o in orphans) and ours.exists() and unrelated.exists()
    assert remove_folders_of(os.getpid(), str(tmp_path)) == [str(ours)] and unrelated.exists()
