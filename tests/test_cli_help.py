"""Every option and argument of every ``polyalign`` command says what it is for, and what it is when not given."""

from __future__ import annotations

import argparse

from polyalign.cli import parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"polyalign": top, **{f"polyalign {name}": p for name, p in sub.choices.items()}}


def _unsaid(commands: dict[str, argparse.ArgumentParser]) -> list[str]:
    """'command option: what is missing' for each argument without a help text, or whose default
    (anything but none, off or an empty list) its help does not name."""
    missing = []
    for command, p in commands.items():
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help:
                missing.append(f"{command} {name}: no help")
            elif action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
                missing.append(f"{command} {name}: help does not give its default {action.default!r}")
    return missing


def test_every_option_has_help_and_its_default():
    assert len(_commands()) > 15  # the walk reaches every subcommand
    assert _unsaid(_commands()) == []


def test_the_walk_finds_an_option_without_help():
    commands = _commands()
    commands["polyalign search"].add_argument("--undocumented", type=int, default=3)
    commands["polyalign search"].add_argument("--quiet-default", type=int, default=3, help="how many")
    assert _unsaid(commands) == ["polyalign search --undocumented: no help",
                                 "polyalign search --quiet-default: help does not give its default 3"]
