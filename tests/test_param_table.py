"""inspect/param_table.py: the written-down counts `cnnzoo list` shows are those of real builds."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from cnnzoo import list_models, model_card
from cnnzoo.inspect import param_table
from cnnzoo.inspect.counts import registered_param_count
from cnnzoo.inspect.param_table import PARAM_COUNTS, listed_param_count
from cnnzoo.registry import _REGISTRY, register_model


def test_the_table_names_every_registered_model_and_nothing_else():
    assert set(PARAM_COUNTS) == set(list_models()), \
        "run `python -m cnnzoo.inspect.param_table` after adding or removing a model"


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_each_count_is_the_default_builds(name):
    assert PARAM_COUNTS[name] == registered_param_count(name), \
        f"{name} changed: run `python -m cnnzoo.inspect.param_table`"


def test_the_file_is_what_the_generator_writes():
    assert Path(param_table.__file__).read_text() == param_table.table_source()


def test_a_model_missing_from_the_table_is_counted_by_building_it():
    def probe(num_classes=1000, in_chans=3, **kwargs):
        return nn.Linear(in_chans, num_classes)

    register_model("_param_table_probe", probe, card=model_card("lenet5"))
    try:
        assert "_param_table_probe" not in PARAM_COUNTS
        assert listed_param_count("_param_table_probe") == 3 * 1000 + 1000
    finally:
        _REGISTRY.pop("_param_table_probe", None)
