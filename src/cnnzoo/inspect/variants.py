"""Model variants from the command line: the keywords a registered model accepts, and a build
that turns a wrong one into one line naming them.

A family's builder hands ``**kwargs`` down a chain (``build`` -> ``efficientnet`` -> ``MobileNet``),
so the accepted keys are gathered by reading that chain's source: every call that passes
``**kwargs`` on is followed, and the named parameters met on the way are the keys.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable

from torch import nn

from ..errors import CnnzooError
from ..registry import _entry, default_cfg

_MAX_HOPS = 6


def accepted_keys(name: str) -> list[str]:
    """The keywords ``create_model(name, ...)`` passes to the family's code, sorted."""
    keys: set[str] = set()
    _walk(_entry(name).builder, keys, set(), 0)
    return sorted(k for k in keys if not k.startswith("_"))


def _walk(fn: Callable, keys: set[str], seen: set, hops: int, n_pos: int = 0) -> None:
    if inspect.isclass(fn):
        # A class takes what its __init__ and, through super().__init__(**kw), its bases take.
        for cls in fn.__mro__:
            if cls is nn.Module or cls is object or "__init__" not in vars(cls):
                continue
            if not _walk_function(vars(cls)["__init__"], keys, seen, hops, n_pos):
                break
            n_pos = 0
        return
    _walk_function(fn, keys, seen, hops, n_pos)


def _walk_function(fn: Callable, keys: set[str], seen: set, hops: int, n_pos: int) -> bool:
    """Add ``fn``'s keyword parameters but its first ``n_pos`` (which its caller fills, as
    ResNet's builder fills ``block`` and ``layers``); True when it hands ``**kwargs`` to
    ``super()``."""
    fn = inspect.unwrap(fn)
    if fn in seen or hops > _MAX_HOPS or not hasattr(fn, "__code__"):
        return False
    seen.add(fn)
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    keys.update(p.name for p in params[n_pos:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
    if var_kw is None:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    names = dict(fn.__globals__)
    if fn.__closure__:
        names.update(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))
    to_super = False
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not any(
                k.arg is None and _spreads(k.value, var_kw) for k in call.keywords):
            continue
        f = call.func
        given = sum(not isinstance(a, ast.Starred) for a in call.args)
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) \
                and getattr(f.value.func, "id", None) == "super":
            to_super = True
        elif isinstance(f, ast.Name) and callable(names.get(f.id)):
            _walk(names[f.id], keys, seen, hops + 1, given)
    return to_super


def _spreads(value: ast.expr, var_kw: str) -> bool:
    """``**kwargs``, or ``**{"bn_eps": 1e-3, **kwargs}``."""
    if isinstance(value, ast.Name):
        return value.id == var_kw
    return isinstance(value, ast.Dict) and any(
        k is None and _spreads(v, var_kw) for k, v in zip(value.keys, value.values))


def create_variant(name: str, settings: dict, make: Callable[..., nn.Module]) -> nn.Module:
    """``make(**settings)``, with a wrong key or value said in one line naming the keys."""
    if not settings:
        return make()
    shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    try:
        return make(**settings)
    except TypeError as exc:
        msg = str(exc)
        bad = msg.split("'")[-2] if msg.count("'") >= 2 else shown
        if "got multiple values" in msg:
            raise CnnzooError(f"{name} sets {bad!r} itself (it is what makes it {name}); "
                              f"the settings it takes: {', '.join(accepted_keys(name))}") from None
        if "unexpected keyword argument" in msg:
            raise CnnzooError(f"{name} has no setting {bad!r}; it accepts: "
                              f"{', '.join(accepted_keys(name))}") from None
        raise _bad_value(name, shown, exc) from None
    except CnnzooError:
        raise
    except Exception as exc:  # whatever a family's code raises on a value it cannot take
        raise _bad_value(name, shown, exc) from None


def _bad_value(name: str, shown: str, exc: Exception) -> CnnzooError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CnnzooError(f"{name} cannot be built with {shown}: {text} "
                       f"(it accepts: {', '.join(accepted_keys(name))})")


def checked_settings(name: str, settings: list[tuple[str, object]] | dict | None) -> dict:
    """``--set`` pairs as a dict (the last of a repeated key wins), checked against the model."""
    out = dict(settings or ())
    if not out:
        return out
    default_cfg(name)  # an unknown model is said first, with its close names
    return out


def check_variant(name: str, settings: dict) -> None:
    """Build ``name`` with ``settings`` on the meta device, for its one-line error if any."""
    from ..registry import create_model
    from .meta import on_meta

    if settings:
        with on_meta():
            create_variant(name, settings, lambda **kw: create_model(name, **kw))
