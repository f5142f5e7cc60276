"""One parameter object per stage: every Dagster Config generated from a stage dataclass agrees with it
field by field, and the one conversion back refuses what it cannot map."""

import dataclasses
import typing

import dagster as dg
import pytest

from recsys_assets.defs import cold_start, collaborative, content, data_prep, resources, retrieval, serving
from recsys_assets.defs.params import SOURCES, config_from, field_docs, to_params


def generated_configs() -> list[type]:
    found = {}
    for module in (data_prep, collaborative, content, cold_start, retrieval, serving, resources):
        for obj in vars(module).values():
            if isinstance(obj, type) and getattr(obj, SOURCES, None):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


PAIRS = [
    (cfg, src)
    for cfg in generated_configs()
    # a subclass that adds a required field of its own (GeneratedContentResource: its simulator) is covered
    # by its parent: the generated fields are the parent's
    if not any(f.is_required() for f in cfg.model_fields.values())
    for src in getattr(cfg, SOURCES)
]


def test_every_stage_with_a_params_dataclass_is_covered():
    names = {src.__name__ for _, src in PAIRS}
    assert names >= {
        "Phase1Rules",
        "PairRules",
        "AlsParams",
        "ConfidenceRules",
        "EmbedParams",
        "ScoreRules",
        "EncoderParams",
        "DatasetRules",
        "ModelParams",
        "FetchPolicy",
        "ModelSpec",
        "IndexParams",
    }


@pytest.mark.parametrize(("config_cls", "source"), PAIRS, ids=[f"{c.__name__}-{s.__name__}" for c, s in PAIRS])
def test_config_and_dataclass_agree_field_by_field(config_cls, source):
    fields = config_cls.model_fields
    docs = field_docs(source)
    excluded = {}
    for f in dataclasses.fields(source):
        if f.name not in fields:
            excluded[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            continue
        default = fields[f.name].default
        assert (tuple(default) if isinstance(default, list) else default) == f.default, f.name
        assert fields[f.name].description == docs.get(f.name), f.name
    # the defaults of the launchpad are the stage's defaults
    assert to_params(config_cls(), source, **excluded) == source()
    # a value set in config arrives in the dataclass, tuples restored
    changed = {}
    for name in typing.get_type_hints(source):
        if name in excluded:
            continue
        value = getattr(source(), name)
        if isinstance(value, bool):
            changed[name] = not value
        elif isinstance(value, (int, float)):
            changed[name] = value + 1
        elif isinstance(value, tuple):
            changed[name] = [*value, value[0]] if value else []
    params = to_params(config_cls(**changed), source, **excluded)
    for name, value in changed.items():
        assert getattr(params, name) == (tuple(value) if isinstance(value, list) else value), name
    # a field left to the overrides must be given
    for name in excluded:
        with pytest.raises(TypeError, match=name):
            to_params(config_cls(), source, **{k: v for k, v in excluded.items() if k != name})


@dataclasses.dataclass(frozen=True)
class _Params:
    a: int = 1
    """The a."""
    b: tuple[float, ...] = (0.5,)


@dataclasses.dataclass(frozen=True)
class _Other:
    c: int = 0


def test_to_params_refuses_unknown_and_missing_fields():
    cfg = config_from(_Params, exclude=("b",))(a=3)
    assert to_params(cfg, _Params, b=(1.0,)) == _Params(a=3, b=(1.0,))
    with pytest.raises(TypeError, match=r"_Params.b is in neither"):
        to_params(cfg, _Params)
    with pytest.raises(TypeError, match=r"no field\(s\) \['renamed'\]"):
        to_params(cfg, _Params, b=(1.0,), renamed=1)
    with pytest.raises(TypeError, match="not generated from _Other"):
        to_params(cfg, _Other)
    with pytest.raises(TypeError, match="no source has"):
        config_from(_Params, exclude=("zzz",))
    with pytest.raises(TypeError, match="also in another source"):
        config_from(_Params, _Params)


def test_generated_config_runs_in_dagster_with_its_docs():
    cfg_cls = config_from(_Params)
    assert cfg_cls.model_fields["a"].description == "The a."

    @dg.asset
    def uses(config: cfg_cls) -> float:  # type: ignore[valid-type]
        return to_params(config, _Params).b[0]

    res = dg.materialize([uses], run_config={"ops": {"uses": {"config": {"b": [2.5]}}}})
    assert res.output_for_node("uses") == 2.5
