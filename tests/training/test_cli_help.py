"""`--help` of every subcommand: each default shown once, never "(default: None)", and the defaults the
train help states are the ones TrainingArguments and BEExformerConfig really use."""

from __future__ import annotations

import argparse
import dataclasses
import re

from beexformer.cli.main import COMMAND_MODULES, build_parser
from beexformer.config import BEExformerConfig
from beexformer.training.arguments import TrainingArguments


def _parsers(parser: argparse.ArgumentParser, path: str = "beex"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_subcommand_is_registered():
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "eval", "predict", "sweep", "summary", "export", "llm"} <= set(top.choices)
    assert len(COMMAND_MODULES) == len(top.choices)


def test_each_default_is_shown_once():
    checked = 0
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        flat = re.sub(r"\s+", " ", text)
        assert "(default: None)" not in flat, path
        for action in parser._actions:
            if not action.option_strings or not action.help:
                continue
            template = parser.formatter_class(prog=path)._get_help_string(action)
            formatted = template % {**vars(action), "prog": path}
            assert formatted.count("default") <= 1, (path, action.option_strings, formatted)
            checked += 1
    assert checked > 50


def test_train_help_states_the_real_defaults():
    parser = next(p for path, p in _parsers(build_parser()) if path == "beex train")
    fields = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    fields |= {f.name: f.default for f in dataclasses.fields(BEExformerConfig) if f.name not in fields}
    stated = 0
    for action in parser._actions:
        match = re.search(r"\(default: ([-+.\deE]+)\)", action.help or "")
        if match and action.dest in fields:
            assert float(match.group(1)) == float(fields[action.dest]), action.option_strings
            stated += 1
    assert stated >= 8
