"""Every command's --help shows its examples one per line (an indented block that follows a lone "Examples:"
paragraph was dedented by Typer and rendered as one run-on paragraph)."""

from __future__ import annotations

import pytest

from gates.cli import app, main

COMMANDS = (
    "validate",
    "mine",
    "train",
    "export",
    "evaluate",
    "gate",
    "promote",
    "rollback",
    "cutover",
    "retire",
    "history",
    "build-bento",
    "register-base",
    "embed",
    "pipeline",
    "demo",
    "report",
    "serve",
    "drift",
    "dashboard",
)


def _example_lines(help_text: str) -> list[str]:
    lines = help_text.split("Example", 1)[1].splitlines()
    return [line.strip() for line in lines if line.strip().startswith(("embedgate ", "torchrun ", "MY_KEY="))]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_each_example_on_its_own_line(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    assert main([command, "--help"]) == 0
    shown = [line.strip() for line in capsys.readouterr().out.splitlines()]
    registered = {info.name: info for info in app.registered_commands}
    examples = _example_lines(registered[command].help)
    assert examples, f"{command} --help has no examples"
    for example in examples:
        assert example in shown, f"{command} --help does not show {example!r} on its own line"


def test_every_command_is_covered_and_registered_once(capsys):
    assert main(["--help"]) == 0
    assert main(["--help"]) == 0
    assert sorted(info.name for info in app.registered_commands) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_points_only_at_what_a_users_clone_has(command, monkeypatch, capsys):
    # The development datasets live beside this repository, not in a user's clone: help must not send users there.
    monkeypatch.setenv("COLUMNS", "250")
    assert main([command, "--help"]) == 0
    shown = capsys.readouterr().out
    assert "Usage" in shown
    assert "../shared" not in shown and "shared/datasets" not in shown
