"""Every registered model named in the reference reproduces its exact parameter count."""
from __future__ import annotations

import pytest

from cnnzoo import list_models
from cnnzoo.inspect.counts import registered_param_count

from conftest import read_reference, reference_variant

REFERENCE = {row[0]: int(row[2]) for row in read_reference("param_counts.tsv")}
REGISTERED = set(list_models())
COVERED = sorted(r for r in REFERENCE if reference_variant(r)[0] in REGISTERED)

# The classic era of the foundation issue: these must be registered, not merely covered if present.
FOUNDATION = ["lenet5", "lenet5@28", "alexnet", "alexnet_original", "vgg11", "vgg13", "vgg16",
              "vgg19", "vgg11_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50",
              "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2"]


def test_foundation_models_are_registered_and_in_the_reference():
    assert set(FOUNDATION) <= set(COVERED)


@pytest.mark.parametrize("ref_name", COVERED)
def test_param_count_matches_reference(ref_name):
    name, kwargs = reference_variant(ref_name)
    assert registered_param_count(name, **kwargs) == REFERENCE[ref_name]
