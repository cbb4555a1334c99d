"""`--set key=value`: YAML scalars, flow lists and maps are parsed; text that only looks like block YAML stays text."""

from __future__ import annotations

import pytest

from gates.commands.train import parse_set
from training.errors import ConfigError


def test_yaml_values_are_parsed():
    assert parse_set(
        ["epochs=3", "matryoshka=false", "matryoshka_dims=[384, 64]", "prompts={query: 'q: '}"]
    ) == {
        "epochs": 3,
        "matryoshka": False,
        "matryoshka_dims": [384, 64],
        "prompts": {"query": "q: "},
    }


@pytest.mark.parametrize("raw", ["query: ", "passage: ", "- not a list", "Represent this: "])
def test_a_prompt_that_looks_like_block_yaml_stays_text(raw):
    assert parse_set([f"prompts.query={raw}"]) == {"prompts.query": raw}


def test_a_quoted_prompt_keeps_its_text():
    assert parse_set(['prompts.document="passage: "']) == {"prompts.document": "passage: "}


def test_an_item_without_equals_is_refused_with_an_example():
    with pytest.raises(
        ConfigError, match=r"--set expects key=value \(e.g. --set mining.num_negatives=3\), got 'epochs'"
    ):
        parse_set(["epochs"])
