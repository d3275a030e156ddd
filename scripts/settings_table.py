"""Print the environment settings of every installed lorag service as markdown tables (for docs/operations.md).

    .venv/bin/python scripts/settings_table.py > /tmp/settings.md

The tables come from each service's pydantic Settings class (``lorag_<svc>.config``): the variable name (its alias
for stack-wide names such as ``LORAG_WEAVIATE_HOST``), the type, the default and the field's description, so the
page cannot drift from what the code reads. A field a service re-declares without a description (``port``) takes the
chassis' description. Services not installed yet are listed as such.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import typing
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from lorag_cli.stack.components import SERVICES
from lorag_core.config import ServiceSettings, env_name


def _type_name(annotation: Any) -> str:
    """A short, readable type: ``int | None``, ``"local" | "tei"``, ``float``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "unset"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]  # lorag settings use factories of no argument
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, str) and value == "":
        return '`""`'
    return f"`{value}`"


def _description(cls: type[BaseSettings], name: str) -> str:
    """The field's description, else the nearest base class's (a re-declared port keeps the chassis' words)."""
    for klass in inspect.getmro(cls):
        fields = getattr(klass, "model_fields", None)
        if isinstance(fields, dict) and name in fields and fields[name].description:
            return str(fields[name].description)
    return ""


def settings_classes(module: types.ModuleType) -> list[type[BaseSettings]]:
    """The ServiceSettings subclasses a config module defines itself (not ones it imports)."""
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.__module__ == module.__name__
    ]


def table(cls: type[BaseSettings]) -> str:
    rows = ["| variable | type | default | what it does |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        description = _description(cls, name).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{env_name(cls, name)}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
    return "\n".join(rows)


def main() -> int:
    out = []
    for spec in SERVICES:
        out.append(f"### {spec.name} (`{spec.module_name}`, default port {spec.port}, metrics {spec.metrics_port})\n")
        try:
            module = importlib.import_module(f"{spec.module_name}.config")
        except ImportError as exc:
            out.append(f"_Not installed here ({exc.name or exc}); its table appears once it is._\n")
            continue
        classes = settings_classes(module)
        if not classes:
            out.append("_No settings class found in its config module._\n")
        for cls in classes:
            out.append(table(cls) + "\n")
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
