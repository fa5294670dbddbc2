"""`@record`: the few dataclass features the value types use, without importing `dataclasses`.

`import dataclasses` pulls in inspect, re and enum (~20 ms of a 50 ms classic `vuserinfo`), and
every command imports the value types (issue 11 item 4).  A record gets an `__init__` (positional or keyword, in declaration order), `__eq__`, `__repr__`, `replace()`
and `as_dict()`; `frozen=True` adds immutability and `__hash__`.  Declared as a dataclass is:
annotated class attributes, a default by plain value or `factory(callable)`.
"""

from __future__ import annotations

_MISSING = object()


class factory:
    """A per-instance default: `tags: list = factory(list)` (dataclasses' default_factory)."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def record(cls=None, *, frozen: bool = False):
    """Class decorator; see the module docstring."""
    if cls is None:
        return lambda c: record(c, frozen=frozen)
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    # no __slots__: callers may hang their own attributes on a record (the remote client's _domain)
    body = {k: v for k, v in cls.__dict__.items() if k not in defaults and k not in ("__dict__", "__weakref__")}
    body["_fields"] = names
    ns: dict = {"_factory": factory}
    params, lines = [], []
    for n in names:
        d = defaults.get(n, _MISSING)
        if d is _MISSING:
            params.append(n)
        else:
            ns[f"_d_{n}"] = d
            params.append(f"{n}=_d_{n}")
        value = f"{n}.make() if type({n}) is _factory else {n}" if isinstance(d, factory) else n
        lines.append(f"  _set(self, {n!r}, {value})" if frozen else f"  self.{n} = {value}")
    src = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(lines) or "  pass") + "\n"
    ns["_set"] = object.__setattr__
    exec(src, ns)  # noqa: S102 - generated from the class's own attribute names, as dataclasses does
    body["__init__"] = ns["__init__"]
    body.setdefault("__eq__", _eq)
    body.setdefault("__repr__", _repr)
    body["replace"] = _replace
    body.setdefault("as_dict", as_dict)
    if frozen:
        body["__setattr__"] = _frozen_set
        body["__delattr__"] = _frozen_set
        body.setdefault("__hash__", _hash)
    else:
        body["__hash__"] = None
    new = type(cls)(cls.__name__, cls.__bases__, body)
    new.__qualname__ = cls.__qualname__
    return new


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return all(getattr(self, n) == getattr(other, n) for n in self._fields)


def _repr(self):
    return f"{type(self).__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields) + ")"


def _hash(self):
    return hash(tuple(getattr(self, n) for n in self._fields))


def _frozen_set(self, *_):
    raise AttributeError(f"{type(self).__name__} is frozen")


def _replace(self, **changes):
    """A copy with `changes` applied (dataclasses.replace)."""
    kw = {n: getattr(self, n) for n in self._fields}
    kw.update(changes)
    return type(self)(**kw)


def _value(v):
    if hasattr(type(v), "_fields") and hasattr(v, "as_dict"):
        return as_dict(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_value(x) for x in v)
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    return v


def as_dict(obj) -> dict:
    """Field name -> value, nested records as dicts (dataclasses.asdict)."""
    return {n: _value(getattr(obj, n)) for n in obj._fields}


def fields(obj) -> tuple[str, ...]:
    """The field names of a record class or instance, in declaration order."""
    return obj._fields


def replace(obj, **changes):
    """dataclasses.replace for records."""
    return obj.replace(**changes)
