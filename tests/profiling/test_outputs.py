"""Every command that writes refuses an output that cannot take its results, in one line, before any work."""

import os

import pytest

from src.profiling import attention, benchmark, collectives, predict, split_probe

COMMANDS = {"benchmark": (benchmark.main, ["--device", "cpu", "--sizes", "tiny"]),
            "attention": (attention.main, ["--device", "cpu"]),
            "collectives": (collectives.main, []),
            "predict": (predict.main, []),
            "split_probe": (split_probe.main, ["--model", "tiny", "--tp", "2", "--device", "cpu"])}


@pytest.mark.parametrize("output,message", [("/proc/x.jsonl", "kernel interface"),
                                            ("{tmp}/full.jsonl", "not a regular file"),  # a link to /dev/full
                                            ("{tmp}/people.csv", "not a CSV results file"),
                                            ("{tmp}/folder.jsonl", "is a directory")])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_output_is_one_line_and_exit_2_for_every_command(command, output, message, tmp_path, capsys):
    (tmp_path / "people.csv").write_text("name,age,city\nAda,36,London\n")
    (tmp_path / "full.jsonl").symlink_to("/dev/full")
    (tmp_path / "folder.jsonl").mkdir()
    before = {p.name: p.is_dir() or p.is_char_device() or p.read_bytes() for p in tmp_path.iterdir()}
    in_dev = set(os.listdir("/dev"))
    main, argv = COMMANDS[command]
    assert main(argv + ["--output", output.replace("{tmp}", str(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert {p.name: p.is_dir() or p.is_char_device() or p.read_bytes() for p in tmp_path.iterdir()} == before
    assert set(os.listdir("/dev")) == in_dev
