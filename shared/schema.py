"""Declared schemas: the shape of a game's inputs and of its views, said once.

A game declares its controls (:class:`Inputs`: each a typed field with bounds
and a default) and its views (:class:`View`: entity tables of typed fields with
units, plus top-level values). Everything around the rules reads the
declaration instead of asking the game for code:

- the server decodes and validates every input with :meth:`Inputs.decode`,
  refusing what does not fit with a reason that names the control;
- idle controls (a disconnected player's) are the fields' defaults;
- a random-valid-input bot draws from :meth:`Inputs.random`, and property tests
  draw from the same bounds (``tickline.testing``);
- the client SDK reads the units of a view's fields (:meth:`Field.to_units`);
- a game's wire reference is generated from it (:func:`describe`).

Sans-I/O and pure: fields check and draw values; nothing here knows a socket.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Controls = dict[str, Any]


class InvalidInput(ValueError):
    """An input the rules refuse; its message is a one-line close reason."""


@dataclass(frozen=True, slots=True)
class Int:
    """An integer in ``[lo, hi]``. ``unit`` names what one step of it is; ``scale`` turns
    a value into that unit (``value * scale``), for fields sent in coarser steps."""

    lo: int
    hi: int
    default: int = None  # type: ignore[assignment]  # set in __post_init__: 0 if in range, else lo
    doc: str = ""
    unit: str = ""
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"Int({self.lo}, {self.hi}): lo is above hi")
        if self.default is None:
            object.__setattr__(self, "default", 0 if self.lo <= 0 <= self.hi else self.lo)
        elif type(self.default) is not int or not self.lo <= self.default <= self.hi:
            raise ValueError(f"Int({self.lo}, {self.hi}): default {self.default!r} is outside its bounds")

    def check(self, value: Any, name: str) -> int:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise InvalidInput(f"input control {name!r} must be an integer from {self.lo} to {self.hi}")
        return value

    def random(self, rng: random.Random) -> int:
        return rng.randint(self.lo, self.hi)

    def kind(self) -> str:
        return f"integer {self.lo} to {self.hi}"


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a few values (ints or strings), such as a direction -1, 0 or 1."""

    values: tuple[Any, ...]
    default: Any = None
    doc: str = ""
    unit: str = ""
    scale: float = 1.0
    # (type, value) of each allowed value: one set lookup per check, and 1.0 and True
    # (equal to 1 in Python) are not 1 on this wire.
    _allowed: frozenset[tuple[type, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a Choice needs at least one value")
        object.__setattr__(self, "_allowed", frozenset((type(v), v) for v in self.values))
        if self.default is None:
            object.__setattr__(self, "default", self.values[0])
        elif (type(self.default), self.default) not in self._allowed:
            raise ValueError(f"Choice{self.values}: default {self.default!r} is not one of its values")

    def check(self, value: Any, name: str) -> Any:
        try:
            if (type(value), value) in self._allowed:
                return value
        except TypeError:  # an unhashable value (a list, an object) is no choice
            pass
        raise InvalidInput(f"input control {name!r} must be {_or(self.values)}")

    def random(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def kind(self) -> str:
        return f"one of {_or(self.values)}"


@dataclass(frozen=True, slots=True)
class Bool:
    default: bool = False
    doc: str = ""
    unit: str = ""
    scale: float = 1.0

    def check(self, value: Any, name: str) -> bool:
        if type(value) is not bool:
            raise InvalidInput(f"input control {name!r} must be true or false")
        return value

    def random(self, rng: random.Random) -> bool:
        return rng.random() < 0.5

    def kind(self) -> str:
        return "true or false"


@dataclass(frozen=True, slots=True)
class Text:
    """A string of at most ``max_len`` characters (in views: names, labels)."""

    max_len: int = 32
    default: str = ""
    doc: str = ""
    unit: str = ""
    scale: float = 1.0

    def check(self, value: Any, name: str) -> str:
        if type(value) is not str or len(value) > self.max_len:
            raise InvalidInput(f"input control {name!r} must be a string of at most {self.max_len} characters")
        return value

    def random(self, rng: random.Random) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(0, self.max_len)))

    def kind(self) -> str:
        return f"string, at most {self.max_len} characters"


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list of at most ``max_len`` items, each an ``item`` (in views: a hand of cards)."""

    item: Int | Choice | Bool | Text
    max_len: int
    doc: str = ""
    unit: str = ""
    scale: float = 1.0

    @property
    def default(self) -> list[Any]:
        return []

    def check(self, value: Any, name: str) -> list[Any]:
        if type(value) is not list or len(value) > self.max_len:
            raise InvalidInput(f"input control {name!r} must be a list of at most {self.max_len} items")
        return [self.item.check(v, name) for v in value]

    def random(self, rng: random.Random) -> list[Any]:
        return [self.item.random(rng) for _ in range(rng.randint(0, self.max_len))]

    def kind(self) -> str:
        return f"list of at most {self.max_len}: {self.item.kind()}"


Field = Int | Choice | Bool | Text | ListOf


def to_units(spec: Field, value: Any) -> Any:
    """``value`` of a field in its declared unit (numbers, interpolated ones too, times ``scale``);
    other values as they are."""
    if spec.scale != 1.0 and type(value) in (int, float):
        return value * spec.scale
    return value


def _or(values: tuple[Any, ...]) -> str:
    shown = [str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else str(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


# ---------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """A game's controls: what one input may hold.

    ``decode`` accepts an object whose keys are controls; each present control is
    checked, each absent one takes its default, except ``optional`` controls,
    which stay absent (arena's ``vt``, the tick the player was looking at, is only
    there when the client says it). The decoded controls keep the declaration's
    order, so equal inputs encode to equal bytes in the log.
    """

    controls: Mapping[str, Field]
    optional: frozenset[str] = frozenset()
    doc: str = ""
    _decode: Callable[[Any], Controls] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = self.optional - self.controls.keys()
        if unknown:
            raise ValueError(f"optional controls {sorted(unknown)} are not declared")
        object.__setattr__(self, "_decode", _compile(self))

    def decode(self, raw: Any) -> Controls:
        """Checked controls from a client's raw input; InvalidInput naming the control otherwise."""
        return self._decode(raw)

    def idle(self) -> Controls:
        """The controls of a player who touches nothing: every default (optional ones absent)."""
        return {name: spec.default for name, spec in self.controls.items() if name not in self.optional}

    def random(self, rng: random.Random, optional: bool = False) -> Controls:
        """A random valid input: each control drawn within its bounds (``optional`` ones too when asked)."""
        return {name: spec.random(rng) for name, spec in self.controls.items() if optional or name not in self.optional}


def _compile(schema: Inputs) -> Callable[[Any], Controls]:
    """One function that decodes an input for ``schema``: the per-input path, written out as
    source for these controls (as dataclasses writes ``__init__``), so that each control costs
    an inline test; a value that fails it goes to the field's ``check`` for the refusal's words."""
    env: dict[str, Any] = {"InvalidInput": InvalidInput, "names": frozenset(schema.controls)}
    lines = [
        "def decode(raw):",
        "    if type(raw) is not dict:",
        "        raise InvalidInput('an input must be an object of controls')",
        "    out = {"
        + ", ".join(f"{name!r}: {i}" for i, name in enumerate(schema.controls) if name not in schema.optional)
        + "}",
        "    seen = 0",
    ]
    for i, (name, spec) in enumerate(schema.controls.items()):
        env[f"spec{i}"] = spec
        if name not in schema.optional:
            env[f"default{i}"] = spec.default
            fresh = "[]" if isinstance(spec, ListOf) else f"default{i}"  # no list shared between inputs
            lines[3] = lines[3].replace(f"{name!r}: {i}", f"{name!r}: {fresh}", 1)
        guard = _guard(spec, i, env)
        lines += [
            f"    if {name!r} in raw:",
            f"        v = raw[{name!r}]",
            f"        out[{name!r}] = v if {guard} else spec{i}.check(v, {name!r})",
            "        seen += 1",
        ]
    lines += [
        "    if seen != len(raw):",
        "        extra = sorted(str(k) for k in raw.keys() - names)",
        "        raise InvalidInput(f'input has unknown control {extra[0][:32]!r}')",
        "    return out",
    ]
    exec("\n".join(lines), env)  # the source above, built from the declaration alone
    decode: Callable[[Any], Controls] = env["decode"]
    return decode


def _guard(spec: Field, i: int, env: dict[str, Any]) -> str:
    """A Python expression over ``v`` that is true when ``spec`` accepts it as it is."""
    if isinstance(spec, Int):
        return f"(type(v) is int and {spec.lo} <= v <= {spec.hi})"
    if isinstance(spec, Bool):
        return "(type(v) is bool)"
    if isinstance(spec, Text):
        return f"(type(v) is str and len(v) <= {spec.max_len})"
    if isinstance(spec, Choice) and {type(x) for x in spec.values} in ({int}, {str}):
        kind = type(spec.values[0]).__name__
        env[f"values{i}"] = frozenset(spec.values)
        return f"(type(v) is {kind} and v in values{i})"
    return "False"  # every value through the field's own check


# ---------------------------------------------------------------------- views


@dataclass(frozen=True)
class Draw:
    """How a replay player (and a picture of a match) draws a table's entities.

    Positions are the fields ``x`` and ``y`` in their declared units (world
    units, after ``scale``). An entity that moves in a straight line and says so
    once (arena's shots) names its velocity fields ``vx``/``vy`` (units per
    tick, after scale) and ``since``, the field holding the tick it was at
    (``x``, ``y``): it is drawn at ``x + vx * (tick - since)``.

    ``colour`` is a CSS colour, or ``"player"``: one colour per player, the
    player's id being the entity's id (``colour_by`` empty) or the value of the
    field ``colour_by`` (a shot's owner). ``label`` names a field written beside
    the entity; ``bar`` a field drawn as a small bar over it, full at ``bar_max``.
    ``hidden_when`` names a boolean field that, when false, draws the entity faded
    (a dead player). ``size`` is the radius (or half the side) in world units.
    """

    shape: str = "circle"  # "circle", "square" or "ring"
    x: str = "x"
    y: str = "y"
    size: float = 5.0
    colour: str = "player"
    colour_by: str = ""
    label: str = ""
    bar: str = ""
    bar_max: float = 100.0
    hidden_when: str = ""
    vx: str = ""
    vy: str = ""
    since: str = ""

    def fields(self) -> set[str]:
        """The fields this drawing reads."""
        named = (self.x, self.y, self.colour_by, self.label, self.bar, self.hidden_when, self.vx, self.vy, self.since)
        return {name for name in named if name}


SHAPES = ("circle", "square", "ring")


@dataclass(frozen=True)
class Table:
    """An entity table of a view: ``view[name]`` maps an id (a string) to an entity's fields.

    ``interpolate`` names the fields a client may interpolate between snapshots
    (positions); the others it shows as the newest snapshot has them. ``key`` says
    what the ids are (``"player id"`` for a table of per-player entries). ``draw``
    says how to draw its entities on a map (None: a table with no place on a map,
    shown as text).
    """

    fields: Mapping[str, Field]
    doc: str = ""
    interpolate: tuple[str, ...] = ()
    key: str = "entity id"
    draw: Draw | None = None

    def __post_init__(self) -> None:
        unknown = set(self.interpolate) - set(self.fields)
        if unknown:
            raise ValueError(f"interpolated fields {sorted(unknown)} are not declared")
        if self.draw is not None:
            missing = self.draw.fields() - set(self.fields)
            if missing:
                raise ValueError(f"drawn fields {sorted(missing)} are not declared")
            if self.draw.shape not in SHAPES:
                raise ValueError(f"draw shape {self.draw.shape!r} is not one of {', '.join(SHAPES)}")


@dataclass(frozen=True)
class View:
    """What a player is sent each tick: entity ``tables`` and top-level ``values``.

    ``players`` names the table whose ids are player ids: a client finds its own
    entity there (and predicts it, where the rules can)."""

    tables: Mapping[str, Table]
    values: Mapping[str, Field] = field(default_factory=dict)
    players: str = "players"
    doc: str = ""
    # The map's size in world units (width, height), for drawing; None: no map.
    world: tuple[float, float] | None = None


# ---------------------------------------------------------------------- reference


def describe(name: str, version: int, inputs: Inputs, view: View) -> str:
    """A game's wire reference in Markdown, from its declarations."""
    lines = [f"# {name} (rules version {version}): inputs and views", ""]
    if inputs.doc:
        lines += [inputs.doc, ""]
    lines += ["## Inputs", "", "| control | values | default | meaning |", "|---|---|---|---|"]
    for control, spec in inputs.controls.items():
        default = "absent" if control in inputs.optional else _json(spec.default)
        lines.append(f"| `{control}` | {spec.kind()} | {default} | {spec.doc} |")
    lines += ["", "## Views", ""]
    if view.doc:
        lines += [view.doc, ""]
    if view.values:
        lines += ["| value | type | unit | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {s.kind()} | {_unit(s)} | {s.doc} |" for k, s in view.values.items()]
        lines.append("")
    for table, entity in view.tables.items():
        mine = f" (keyed by {'player id' if table == view.players else entity.key})"
        lines += [f"### `{table}`{mine}", ""]
        if entity.doc:
            lines += [entity.doc, ""]
        lines += ["| field | type | unit | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {s.kind()} | {_unit(s)} | {s.doc} |" for k, s in entity.fields.items()]
        lines.append("")
    return "\n".join(lines)


def _json(value: Any) -> str:
    """A value as it travels (true, "", [])."""
    return orjson.dumps(value).decode()


def _unit(spec: Field) -> str:
    if not spec.unit:
        return ""
    return spec.unit if spec.scale == 1.0 else f"{spec.unit} (value x {spec.scale:g})"
