"""The torchrun launcher on CPU: real 2-rank gloo groups that succeed, raise, are SIGKILLed, hang, or lose their parent."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from src.harness.launch import LaunchResult, free_port, run_torchrun, torchrun_argv, under_torchrun
from tests.harness.processes import processes_naming as _processes_naming, running as _alive

TARGET = "tests.harness.launch_target"
SLEEPER = "tests.harness.sleeper"
LAUNCH_TIMEOUT_S = 60  # a healthy 2-rank launch takes ~5 s on the 2-core CI machine
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pids(out_dir) -> list[int]:
    return [int((out_dir / name).read_text()) for name in sorted(os.listdir(out_dir)) if name.startswith("pid")]


def test_torchrun_argv_names_the_port_and_the_module():
    argv = torchrun_argv(4, "pkg.mod", ["--x", "1"], 12345)
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert argv[argv.index("--nproc_per_node") + 1] == "4"
    assert argv[argv.index("--master_port") + 1] == "12345"
    assert argv[-4:] == ["-m", "pkg.mod", "--x", "1"]


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert 0 < port < 65536


def test_under_torchrun_reads_its_variables(monkeypatch):
    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(name, value)
    assert under_torchrun()
    monkeypatch.delenv("MASTER_PORT")
    assert not under_torchrun()


def test_two_ranks_all_reduce_and_see_the_parents_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "0")  # what the GPU machines export; it must reach every rank
    result = run_torchrun(2, TARGET, [str(tmp_path)], LAUNCH_TIMEOUT_S, env={"ECHO_VARIABLES": "NCCL_NVLS_ENABLE EXTRA",
                                                                             "EXTRA": "yes"})
    assert result.ok, result.stderr_tail
    assert result.describe() == "ok"
    for rank in (0, 1):
        assert float((tmp_path / f"sum{rank}").read_text()) == 1.0 + 2.0  # ranks contribute rank + 1
        assert (tmp_path / f"env{rank}").read_text() == "NCCL_NVLS_ENABLE=0 EXTRA=yes"
    assert not [pid for pid in _pids(tmp_path) if _alive(pid)]


def test_a_rank_that_raises_is_named_with_its_exception(tmp_path):
    result = run_torchrun(2, TARGET, [str(tmp_path), "raise", "1"], LAUNCH_TIMEOUT_S)
    assert not result.ok and not result.timed_out and result.returncode != 0
    assert result.failed_ranks[1] == "ValueError: rank 1 fails on purpose"
    assert list(result.failed_ranks)[0] == 1  # the cause first, a peer's lost connection (if reported) after it
    assert "rank 1: ValueError: rank 1 fails on purpose" in result.describe()
    assert not [pid for pid in _pids(tmp_path) if _alive(pid)]


def test_a_killed_rank_is_named_and_the_other_is_torn_down(tmp_path):
    result = run_torchrun(2, TARGET, [str(tmp_path), "kill", "0"], LAUNCH_TIMEOUT_S)
    assert not result.timed_out  # rank 1, blocked in all_reduce, was ended by torchrun, not by our timeout
    assert result.failed_ranks[0] == "killed by SIGKILL"
    assert len(_pids(tmp_path)) == 2
    assert not [pid for pid in _pids(tmp_path) if _alive(pid)]
    assert not _processes_naming(str(tmp_path))


def test_a_hanging_group_is_ended_at_the_timeout(tmp_path):
    # Both sleeper ranks were running 2.3 s after the launch on the idle 2-core machine, up to 15 s seen under load:
    # a short timeout first, and longer ones only where the group was ended before both ranks had started (4 s, not
    # 8: both had started within a 3 s timeout here, and each test run waited out the whole first timeout).
    for timeout_s in (4, 10, 30):
        out = tmp_path / f"timeout{timeout_s}"
        out.mkdir()
        result = run_torchrun(2, SLEEPER, [str(out)], timeout_s=timeout_s)
        assert result.timed_out and not result.ok
        assert result.describe().startswith("timed out")
        assert not _processes_naming(str(out))
        if len(_pids(out)) == 2:
            break
    assert len(_pids(out)) == 2  # both ranks had started, so both had to be ended


def test_ctrl_c_in_the_parent_leaves_no_process(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from src.harness.launch import run_torchrun; "
         f"run_torchrun(2, {SLEEPER!r}, [sys.argv[1]], 300)", str(tmp_path)],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while len(_pids(tmp_path)) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
        assert len(_pids(tmp_path)) == 2, "the ranks never started"
        parent.send_signal(signal.SIGINT)
        _, stderr = parent.communicate(timeout=LAUNCH_TIMEOUT_S)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert "KeyboardInterrupt" in stderr  # the interrupt propagated after the clean-up
    assert not _processes_naming(str(tmp_path))


def test_describe_puts_the_cause_in_one_line():
    result = LaunchResult(returncode=1, timed_out=False, failed_ranks={3: "OOM: torch.OutOfMemoryError: x"},
                          stderr_tail="")
    assert result.describe() == "rank 3: OOM: torch.OutOfMemoryError: x"
    assert LaunchResult(1, False, {}, "").describe() == "launcher exit status 1"


@pytest.mark.parametrize("message, expected", [
    ({"message": "Traceback...\ntorch.OutOfMemoryError: CUDA out of memory. Tried 2 GiB"},
     "OOM: torch.OutOfMemoryError: CUDA out of memory. Tried 2 GiB"),
    ({"message": "RuntimeError: boom"}, "RuntimeError: boom"),
])
def test_causes_from_error_files(message, expected):
    from src.harness.launch import _cause

    assert _cause({"message": message, "exitcode": 1}, "") == expected


def test_causes_without_error_file_come_from_the_ranks_stderr():
    from src.harness.launch import _cause

    stderr = "[rank2]: Traceback\n[rank2]: KeyError: 'x'\nsome warning at exit\n"
    assert _cause({"message": "see docs", "exitcode": 1}, stderr) == "exit status 1; KeyError: 'x'"
    assert _cause({"message": "", "exitcode": -6}, "") == "killed by SIGABRT"


def test_init_distributed_outside_torchrun_says_what_is_missing(monkeypatch):
    from src.harness.launch import init_distributed

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun's environment"):
        init_distributed("gloo", timeout_s=5)


def test_the_rank_that_stopped_answering_comes_before_the_rank_that_timed_out_waiting(tmp_path):
    from src.harness.launch import _failed_ranks

    timed_out = {"message": "RankFailed: error: RuntimeError: [gloo] Timed out waiting 3000ms for recv operation"}
    failures = {"0": {"local_rank": 0, "exitcode": 1, "message": timed_out, "timestamp": 10},
                "1": {"local_rank": 1, "exitcode": -9, "message": "", "timestamp": 12}}
    path = tmp_path / "failures.json"
    path.write_text(json.dumps(failures))
    assert list(_failed_ranks(str(path), str(tmp_path))) == [1, 0]  # killed later, but its peer only waited for it
    failures["1"]["stalled"] = "stopped answering: its process was stopped (state T ...)"
    path.write_text(json.dumps(failures))
    ranks = _failed_ranks(str(path), str(tmp_path))
    assert list(ranks) == [1, 0] and ranks[1] == failures["1"]["stalled"]
