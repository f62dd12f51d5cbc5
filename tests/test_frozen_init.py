"""mlspec.core.frozen.fast_init: the faster __init__ behaves exactly as the dataclass's own."""

from __future__ import annotations

import dataclasses

import pytest

from mlspec.addresses import Address
from mlspec.core.frozen import fast_init
from mlspec.core.kind import Change, Node
from mlspec.core.types import Action, Reason, ReasonCode
from mlspec.graph import InputRef, StepInstance
from mlspec.kinds.step import StepDetail
from mlspec.spec import Dep, OutputOpts, Resources, Step

DECORATED = [Step, OutputOpts, Resources, Dep, InputRef, StepInstance, Address, Node, Change, Reason, StepDetail]


def reference_init(cls):
    """The __init__ dataclasses would generate for ``cls`` (a fresh frozen dataclass of the same fields)."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
              for f in dataclasses.fields(cls)]
    ns = {"__post_init__": cls.__post_init__} if hasattr(cls, "__post_init__") else {}
    return dataclasses.make_dataclass(cls.__name__ + "Ref", fields, namespace=ns, frozen=True)


def required_args(cls) -> dict:
    return {f.name: f"v-{f.name}" for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_defaults_and_factories_match_the_dataclass_init(cls):
    if cls is Reason:
        args = {"code": "code_changed"}
    elif cls in (Change,):
        args = {**required_args(cls), "action": Action.UPDATE}
    else:
        args = required_args(cls)
    ours, ref = cls(**args), reference_init(cls)(**args)
    assert vars(ours) == vars(ref)
    # a default_factory gives every instance its own object, as dataclasses does
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(ours, f.name) is not getattr(cls(**args), f.name)


def test_positional_keyword_frozen_equality_and_errors():
    s = Step("train", "m:f", params={"C": 1})
    assert s == Step(name="train", run="m:f", params={"C": 1}) and s.cmd == "" and s.outputs == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"
    with pytest.raises(TypeError):
        Step()  # the required name
    with pytest.raises(TypeError):
        Step("a", nope=1)
    a = Address("step", "train", (("C", "0.1"),), "model")
    assert hash(a) == hash(Address("step", "train", (("C", "0.1"),), "model")) and str(a) == "step.train[C=0.1].model"
    assert repr(Resources()) == "Resources(cpus=1, gpus=0, memory=None, custom={})"


def test_post_init_still_runs():
    assert Reason("code_changed").code is ReasonCode.CODE_CHANGED


def test_refuses_what_it_cannot_copy():
    @dataclasses.dataclass(frozen=True)
    class Hidden:
        a: int
        b: int = dataclasses.field(default=0, init=False)

    with pytest.raises(TypeError, match="init=False"):
        fast_init(Hidden)
