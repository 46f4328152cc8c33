"""Every console command follows one convention (semobridge_runtime.commandline, docs/errors.md): -h and --help
without importing PyTorch, a missing or unreadable model file exits 3, an unknown option 2, both with the one
`PROG: error:` prefix, and a reader of stdout that goes away ends the command with 141 and no traceback."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {**tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"],
           **tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())["project"]["scripts"]}
# the subcommands whose help is also asked for
HELP = [[name] for name in SCRIPTS] + [["semobridge", sub] for sub in ("fit", "eval", "fit-features", "predict-features", "info")] \
    + [["semobridge-classes", sub] for sub in ("add", "remove", "rename", "list")]
# each command (and subcommand) that reads a model, with MODEL where the model file goes
MODEL_COMMANDS = [
    ["semobridge", "info", "MODEL"],
    ["semobridge", "eval", "MODEL", "--data", "DATA"],
    ["semobridge", "predict-features", "MODEL", "DATA", "-o", "OUT"],
    ["semobridge-export", "--from-model", "MODEL", "-o", "OUT"],
    ["semobridge-build-engine", "MODEL"],
    ["semobridge-run", "MODEL", "DATA"],
    ["semobridge-classes", "add", "MODEL", "OUT", "umbrella"],
    ["semobridge-classes", "remove", "OUT", "coat", "--model", "MODEL"],  # the old spelling, still accepted
    ["semobridge-eval", "MODEL", "DATA"],
    ["semobridge-serve", "MODEL"],
]
RUNNER = """
import importlib, sys
module, name = sys.argv[1].split(":")
entry = getattr(importlib.import_module(module), name)
try:
    code = entry(sys.argv[2:])
except SystemExit as done:
    code = done.code
print("HEAVY:" + ",".join(m for m in ("torch", "open_clip", "onnxruntime", "tritonclient", "av") if m in sys.modules),
      file=sys.stderr)
sys.exit(code)
"""


def call(script: str, argv: list[str]) -> int:
    """The console script's entry point, in this process (as `script argv...` would run it): its exit code."""
    module, name = SCRIPTS[script].split(":")
    try:
        return getattr(importlib.import_module(module), name)(argv)
    except SystemExit as done:
        return done.code


def spawn(script: str, argv: list[str], **kwargs) -> subprocess.Popen:
    """The console script in a fresh interpreter, which reports the heavy modules it imported on stderr."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, SCRIPTS[script], *argv], env=env, text=True,
                            stderr=subprocess.PIPE, **kwargs)


def test_every_command_is_listed() -> None:
    assert sorted(SCRIPTS) == ["semobridge", "semobridge-build-engine", "semobridge-classes", "semobridge-eval",
                               "semobridge-export", "semobridge-run", "semobridge-serve"]
    assert {argv[0] for argv in MODEL_COMMANDS} == set(SCRIPTS)


@pytest.mark.parametrize("command", HELP, ids=" ".join)
def test_h_and_help_answer_without_heavy_imports(command: list[str], capsys) -> None:
    process = spawn(command[0], [*command[1:], "-h"], stdout=subprocess.PIPE)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.startswith(f"Usage: {' '.join(command)} ") and "-h, --help" in out
    assert err.strip().splitlines()[-1] == "HEAVY:", err  # no torch, open_clip, onnxruntime, ...
    assert call(command[0], [*command[1:], "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"Usage: {' '.join(command)} ")


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_missing_or_unusable_model_file_exits_3(command: list[str], tmp_path: Path, capsys) -> None:
    (tmp_path / "data").mkdir()
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    for model, says in ((tmp_path / "missing.onnx", "it does not exist"), (tmp_path, "is a directory"),
                        (fifo, "is a pipe (FIFO)")):
        names = {"MODEL": str(model), "DATA": str(tmp_path / "data"), "OUT": str(tmp_path / "out")}
        assert call(command[0], [names.get(a, a) for a in command[1:]]) == 3, (command, model)
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith(f"{command[0]}: error: ") and says in err[0], err
        assert all(line.startswith("hint: ") for line in err[1:]) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [[name] for name in SCRIPTS] + [["semobridge", "fit"], ["semobridge-classes", "add"]],
                         ids=" ".join)
def test_an_unknown_option_exits_2_with_the_one_prefix(command: list[str], capsys) -> None:
    assert call(command[0], [*command[1:], "--no-such-option"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"{command[0]}: error: No such option") and "--no-such-option" in err[0]
    assert err[1] == f"hint: `{' '.join(command)} -h` lists the options"


@pytest.mark.parametrize("command", HELP[:len(SCRIPTS)], ids=" ".join)
def test_a_closed_stdout_ends_quietly_with_141(command: list[str]) -> None:
    """`semobridge-export --help | head -1`, with the reader gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        process = spawn(command[0], ["--help"], stdout=write)
    finally:
        os.close(write)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and "Traceback" not in err and "Exception ignored" not in err, err


def test_old_spellings_still_work(tmp_path: Path) -> None:
    """--output (now -o/--out), --spinning/--no-spinning (now --spin/--no-spin), hidden from --help."""
    from semobridge.cli import main
    from semobridge_runtime.commandline import parse_options
    from semobridge_runtime.serve.cli import cli as serve
    from semobridge_export.cli import build_engine_main

    assert parse_options(serve, ["m.onnx", "--spinning"])["spin"] is True
    assert parse_options(serve, ["m.onnx", "--no-spinning"])["spin"] is False
    assert parse_options(serve, ["m.onnx"])["spin"] is False
    assert parse_options(build_engine_main, ["m.onnx", "--output", "e.engine"])["out"] == "e.engine"
    assert parse_options(main.commands["fit"], ["--data", str(tmp_path), "--shots", "1", "--output", "m.st"])["out"] == "m.st"
    for cmd in (serve, build_engine_main, main.commands["fit"]):
        shown = cmd.get_help(cmd.context_class(cmd, info_name=cmd.name))
        assert "--output" not in shown and "--spinning" not in shown


def test_shell_completion_as_click_offers_it(monkeypatch, capsys) -> None:
    monkeypatch.setenv("_SEMOBRIDGE_RUN_COMPLETE", "bash_source")
    assert call("semobridge-run", []) == 0
    assert "_SEMOBRIDGE_RUN_COMPLETE=bash_complete" in capsys.readouterr().out
