"""TypeScript types of a game's wire, from its declared schemas (shared/schema.py).

:func:`typescript_types` turns a game's :class:`~tickline.shared.schema.Inputs` and
:class:`~tickline.shared.schema.View` into a TypeScript module of declarations only:
``Controls`` (what one input may hold), ``View`` (what a view holds) and one
interface per entity table, each field with its declaration's doc, bounds, unit and
default as a doc comment. A browser game written against the client SDK
(clients/web) gets its controls and views checked by the compiler:

    import type { Controls, View } from "./games/arena.js";
    const client = await connect<Controls, View>(options);

The same declarations make the Markdown reference (``schema.describe``); this is the
compiler's copy. Pure: a string out, nothing written.
"""

from __future__ import annotations

import re

import orjson

from tickline.shared.schema import Bool, Choice, Field, Inputs, Int, Table, Text, View

__all__ = ["typescript_types"]

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def typescript_types(name: str, version: int, inputs: Inputs, view: View) -> str:
    """The TypeScript module of game ``name`` (rules ``version``): its controls and views as types."""
    out = [
        f"// {name} (rules version {version}): controls and views, generated from the game's declared",
        "// schemas by tickline.shared.typescript.typescript_types. Do not edit: regenerate.",
        "",
    ]
    out += _doc(inputs.doc or f"The controls of one {name} input.", "")
    out.append("export interface Controls {")
    for control, spec in inputs.controls.items():
        notes = [_kind(spec)]
        if control in inputs.optional:
            notes.append("Optional: absent unless sent.")
        else:
            notes.append(f"Default: {_literal(spec.default)}.")
        out += _doc(_sentence(spec.doc), *notes, indent="  ")
        out.append(f"  {_key(control)}{'?' if control in inputs.optional else ''}: {_type(spec)};")
    out += ["}", ""]

    entities: dict[str, str] = {}
    for table_name, table in view.tables.items():
        interface = _pascal(table_name) + "Entity"
        entities[table_name] = interface
        out += _doc(_sentence(table.doc), *_table_notes(table_name, table, view))
        out.append(f"export interface {interface} {{")
        for field_name, spec in table.fields.items():
            out += _doc(_sentence(spec.doc), _kind(spec), indent="  ")
            out.append(f"  {_key(field_name)}: {_type(spec)};")
        out += ["}", ""]

    out += _doc(view.doc or f"What a {name} player is sent each tick.")
    out.append("export interface View {")
    for table_name, table in view.tables.items():
        keyed = "player id" if table_name == view.players else table.key
        out += _doc(_sentence(table.doc), f"Keyed by {keyed}.", indent="  ")
        out.append(f"  {_key(table_name)}: Record<string, {entities[table_name]}>;")
    for value_name, spec in view.values.items():
        out += _doc(_sentence(spec.doc), _kind(spec), indent="  ")
        out.append(f"  {_key(value_name)}: {_type(spec)};")
    out += ["}", ""]
    return "\n".join(out)


def _type(spec: Field) -> str:
    if isinstance(spec, Bool):
        return "boolean"
    if isinstance(spec, Int):
        return "number"
    if isinstance(spec, Text):
        return "string"
    if isinstance(spec, Choice):
        return " | ".join(_literal(v) for v in spec.values)
    item = _type(spec.item)
    return f"({item})[]" if " " in item else f"{item}[]"


def _kind(spec: Field) -> str:
    """Bounds and unit, as the Markdown reference words them."""
    kind = spec.kind()
    words = kind[0].upper() + kind[1:]
    if spec.unit:
        scale = "" if spec.scale == 1.0 else f" (value x {spec.scale:g})"
        words += f"; unit: {spec.unit}{scale}"
    return words + "."


def _table_notes(name: str, table: Table, view: View) -> list[str]:
    notes = [f'The entities of `view["{name}"]`.']
    if table.interpolate:
        notes.append(f"Interpolated between snapshots: {', '.join(table.interpolate)}.")
    return notes


def _literal(value: object) -> str:
    return orjson.dumps(value).decode()


def _key(name: str) -> str:
    return name if _IDENTIFIER.match(name) else _literal(name)


def _pascal(name: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    joined = "".join(w[0].upper() + w[1:] for w in words) or "Table"
    return joined if _IDENTIFIER.match(joined) else f"T{joined}"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _doc(*lines: str, indent: str = "") -> list[str]:
    """A JSDoc comment of the non-empty ``lines`` (none at all when every line is empty)."""
    body = [line.replace("*/", "*\\/") for line in lines if line]
    if not body:
        return []
    if len(body) == 1:
        return [f"{indent}/** {body[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {line}" for line in body), f"{indent} */"]
