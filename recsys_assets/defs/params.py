"""One parameter object per stage.

A stage's parameters are a frozen dataclass in its pure module (``stages/…``): names, types, defaults
and the docstring under each field. The Dagster ``Config`` (or ``ConfigurableResource``) that the
launchpad shows is generated from that dataclass by :func:`config_from`, so a default or a name is
written once. :func:`to_params` is the one way back: it builds the dataclass from a config, and raises on
a field it does not know or a field it cannot fill -- a rename can never be dropped silently.

Only the differences between the two worlds are handled here: Dagster config has lists where the
dataclasses keep (hashable) tuples.
"""

import ast
import dataclasses
import functools
import inspect
import sys
import textwrap
import typing

import dagster as dg
import pydantic

SOURCES = "__param_sources__"


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a class (``x: int = 1`` then ``\"\"\"...\"\"\"``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _config_type(tp: typing.Any) -> typing.Any:
    """``tuple[X, ...]`` -> ``list[X]`` (Dagster config has no tuples); everything else as is."""
    if typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return list[args[0]] if args else list
    return tp


def _default(f: dataclasses.Field) -> typing.Any:
    if f.default is not dataclasses.MISSING:
        return list(f.default) if isinstance(f.default, tuple) else f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def config_from(
    *sources: type,
    exclude: typing.Iterable[str] = (),
    base: type = dg.Config,
    name: typing.Optional[str] = None,
) -> type:
    """A ``dg.Config`` (or, with ``base``, a ``ConfigurableResource``) whose fields are those of the
    ``sources`` dataclasses, minus ``exclude`` (fields that come from elsewhere, e.g. a resource, and are
    passed to :func:`to_params` as overrides). Subclass it to add fields of the asset's own."""
    exclude = set(exclude)
    fields: dict[str, typing.Any] = {}
    for src in sources:
        hints = typing.get_type_hints(src)
        docs = field_docs(src)
        for f in dataclasses.fields(src):
            if f.name in exclude:
                continue
            if f.name in fields:
                raise TypeError(f"field {f.name!r} of {src.__name__} is also in another source of this config")
            fields[f.name] = (
                _config_type(hints[f.name]),
                pydantic.Field(default=_default(f), description=docs.get(f.name)),
            )
    unknown = exclude - {f.name for src in sources for f in dataclasses.fields(src)}
    if unknown:
        raise TypeError(f"exclude names fields that no source has: {sorted(unknown)}")
    module = sys._getframe(1).f_globals.get("__name__", __name__)  # the defining module, for docs and reprs
    cls = pydantic.create_model(name or f"{sources[0].__name__}Config", __base__=base, __module__=module, **fields)
    setattr(cls, SOURCES, tuple(sources))
    cls.__doc__ = (sources[0].__doc__ or "") if len(sources) == 1 else None
    return cls


def to_params(config: pydantic.BaseModel, cls: type, **overrides: typing.Any) -> typing.Any:
    """The dataclass ``cls`` filled from ``config`` (and ``overrides`` for fields the config leaves out).

    Raises ``TypeError`` when ``cls`` is not a source of the config's class, when an override names no
    field of ``cls``, and when a field of ``cls`` is in neither the config nor the overrides."""
    sources = getattr(type(config), SOURCES, ())
    if cls not in sources:
        raise TypeError(
            f"{type(config).__name__} is not generated from {cls.__name__} (sources: {[s.__name__ for s in sources]})"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    values = config.model_dump()
    hints = typing.get_type_hints(cls)
    out = {}
    for name in names:
        if name in overrides:
            v = overrides[name]
        elif name in values:
            v = values[name]
        else:
            raise TypeError(f"{cls.__name__}.{name} is in neither {type(config).__name__} nor the overrides")
        if typing.get_origin(hints[name]) is tuple and isinstance(v, list):
            v = tuple(v)
        out[name] = v
    return cls(**out)
