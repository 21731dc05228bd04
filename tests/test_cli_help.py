"""The command line behaves like its peers: ``--version``, a help text on every argument of every command, commands
listed by what a user does, and no traceback when a reader stops early."""

from __future__ import annotations

import argparse

import pytest

from asd_repro import __version__
from asd_repro.cli import GROUPS, REPORT_COMMANDS, _parser, main



class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command builds (the report commands and the runner build their own), caught before parsing."""
    def catch(self, *args, **kwargs):
        raise _Caught(self)

    if command not in REPORT_COMMANDS and command != "repro":
        return _parser()._subparsers._group_actions[0].choices[command]
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    with pytest.raises(_Caught) as caught:
        main([command])
    return caught.value.parser


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"asd-repro {__version__}"


def test_the_help_finder_sees_an_undocumented_argument():
    ap = argparse.ArgumentParser()
    ap.add_argument("--documented", help="says what it is")
    ap.add_argument("--bare")
    assert _undocumented(ap) == ["bare"]


@pytest.mark.parametrize("command", sorted({c for group in GROUPS.values() for c in group}))
def test_every_argument_of_every_command_has_a_help_text(command, monkeypatch):
    parser = _parser_of(command, monkeypatch)
    assert _undocumented(parser) == [], f"asd-repro {command}: arguments without help"


def test_the_help_lists_every_command_once_grouped_by_what_a_user_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    commands = set(_parser()._subparsers._group_actions[0].choices)
    listed = [c for group in GROUPS.values() for c in group]
    assert sorted(listed) == sorted(commands)
    for title, group in GROUPS.items():
        assert f"{title}:" in text
        for name in group:
            assert f"  {name} " in text


def test_a_reader_that_stops_early_gets_no_traceback(monkeypatch, capsys, repo_cwd):
    """`asd-repro config ... --values | head -1`: the reader is gone before the first line (a closed pipe)."""
    import os
    import sys

    read, write = os.pipe()
    os.close(read)
    out = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", out)
    try:
        assert main(["config", "mnist5k", "badnets", "asd", "--values"]) == 0
    finally:
        out.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_runner_cut_short_by_a_closed_pipe_does_not_pass(monkeypatch):
    """Like a gate: `asd-repro repro | head` that loses its reader exits 141, never 0."""
    import os
    import sys

    from asd_repro import runner

    def cut(argv):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(runner, "main", cut)
    read, write = os.pipe()
    os.close(read)
    out = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", out)
    try:
        assert main(["repro"]) == 141
    finally:
        out.close()
