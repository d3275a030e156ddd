"""``lorag.common.v1.Filter`` trees → domain filters (``lorag_indexer.domain.Filter``), checked against a collection.

Every bad node is reported with its path (``filter.composite.filters[1].field.value``). Operands are converted to
the field's type here (an int operand for a double field becomes a float, a timestamp a UTC datetime), so the store
only translates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lorag.common.v1 import common_pb2
from lorag_indexer.convert.chunks import timestamp_to_datetime
from lorag_indexer.domain import (
    BUILTIN_FILTER_FIELDS,
    METADATA_FIELD_PREFIX,
    CollectionInfo,
    Condition,
    Filter,
    FilterOp,
    MetadataType,
    Violations,
    all_of,
    any_of,
    type_name,
)

MAX_FILTER_DEPTH = 8

_OP = common_pb2.FilterOperator
_OPS = {
    _OP.FILTER_OPERATOR_EQUAL: FilterOp.EQUAL,
    _OP.FILTER_OPERATOR_NOT_EQUAL: FilterOp.NOT_EQUAL,
    _OP.FILTER_OPERATOR_GREATER_THAN: FilterOp.GREATER_THAN,
    _OP.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL: FilterOp.GREATER_OR_EQUAL,
    _OP.FILTER_OPERATOR_LESS_THAN: FilterOp.LESS_THAN,
    _OP.FILTER_OPERATOR_LESS_THAN_OR_EQUAL: FilterOp.LESS_OR_EQUAL,
    _OP.FILTER_OPERATOR_LIKE: FilterOp.LIKE,
    _OP.FILTER_OPERATOR_CONTAINS_ANY: FilterOp.CONTAINS_ANY,
    _OP.FILTER_OPERATOR_CONTAINS_ALL: FilterOp.CONTAINS_ALL,
    _OP.FILTER_OPERATOR_IS_NULL: FilterOp.IS_NULL,
}
_COMPARISONS = (FilterOp.EQUAL, FilterOp.NOT_EQUAL)
_RANGES = (FilterOp.GREATER_THAN, FilterOp.GREATER_OR_EQUAL, FilterOp.LESS_THAN, FilterOp.LESS_OR_EQUAL)
_SCALAR_KINDS = {
    MetadataType.STRING: ("string_value",),
    MetadataType.INT: ("int_value",),
    MetadataType.DOUBLE: ("double_value", "int_value"),
    MetadataType.BOOL: ("bool_value",),
    MetadataType.TIMESTAMP: ("timestamp_value",),
}
_LIST_KINDS: dict[MetadataType, tuple[str, ...]] = {
    MetadataType.STRING: ("string_list",),
    MetadataType.INT: ("int_list",),
    MetadataType.DOUBLE: ("double_list", "int_list"),
    MetadataType.BOOL: ("bool_list",),
    MetadataType.TIMESTAMP: (),
}


def filter_fields(info: CollectionInfo) -> dict[str, MetadataType]:
    """Every FieldFilter.field name the collection accepts, with its type."""
    fields = dict(BUILTIN_FILTER_FIELDS)
    for key, t in info.metadata_fields.items():
        fields[METADATA_FIELD_PREFIX + key] = t
    return fields


class _Invalid:
    """Marks an operand or node already reported as a violation."""


_INVALID = _Invalid()


class _MatchAll:
    """An unset Filter: matches every chunk (inside an OR, the OR matches everything)."""


_MATCH_ALL = _MatchAll()


def _operand(
    value: common_pb2.MetadataValue,
    element: MetadataType,
    kinds: tuple[str, ...],
    path: str,
    errors: Violations,
    describe: str,
) -> Any:
    """The operand as the field's type, or _INVALID (and a violation)."""
    kind = value.WhichOneof("kind")
    if kind not in kinds:
        errors.add(path, f"{describe}; got {kind or 'no value'}", "FILTER_TYPE_MISMATCH")
        return _INVALID
    if kind == "timestamp_value":
        try:
            return timestamp_to_datetime(value.timestamp_value)
        except (ValueError, OverflowError):
            errors.add(path, "the timestamp is out of range", "INVALID_FILTER")
            return _INVALID
    raw = getattr(value, kind)
    if kind.endswith("_list"):
        values = list(raw.values)
        if not values:
            errors.add(path, "the list operand must hold at least one element", "INVALID_FILTER")
            return _INVALID
        if element is MetadataType.DOUBLE:
            values = [float(v) for v in values]
            if not all(math.isfinite(v) for v in values):
                errors.add(path, "NaN and infinities are refused", "INVALID_FILTER")
                return _INVALID
        return values
    if element is MetadataType.DOUBLE:
        raw = float(raw)
        if not math.isfinite(raw):
            errors.add(path, "NaN and infinities are refused", "INVALID_FILTER")
            return _INVALID
    return raw


def _field_filter(
    f: common_pb2.FieldFilter, fields: Mapping[str, MetadataType], path: str, errors: Violations
) -> Condition | _Invalid:
    field_type = fields.get(f.field)
    if field_type is None:
        if f.field.startswith(METADATA_FIELD_PREFIX):
            key = f.field.removeprefix(METADATA_FIELD_PREFIX)
            message = f"unknown field {f.field!r}: no chunk of this collection has metadata key {key!r}"
        else:
            message = f"unknown field {f.field!r}; use one of {', '.join(BUILTIN_FILTER_FIELDS)}, or metadata.<key>"
        errors.add(f"{path}.field", message, "UNKNOWN_FILTER_FIELD")
        return _INVALID
    element = field_type.element
    label = type_name(field_type)
    op = _OPS.get(f.operator)
    vpath = f"{path}.value"
    if op is None:
        errors.add(f"{path}.operator", "a filter operator is required", "INVALID_FILTER")
        return _INVALID
    if op in _RANGES and element is MetadataType.BOOL:
        errors.add(f"{path}.operator", f"field {f.field!r} is boolean and has no order", "INVALID_FILTER")
        return _INVALID
    if op in _COMPARISONS or op in _RANGES:
        describe = f"field {f.field!r} ({label}) compares with a {type_name(element)} value"
        value = _operand(f.value, element, _SCALAR_KINDS[element], vpath, errors, describe)
    elif op is FilterOp.LIKE:
        if element is not MetadataType.STRING:
            errors.add(f"{path}.operator", f"LIKE needs a string field; {f.field!r} is {label}", "INVALID_FILTER")
            return _INVALID
        value = _operand(f.value, element, ("string_value",), vpath, errors, "LIKE takes a string pattern")
    elif op in (FilterOp.CONTAINS_ANY, FilterOp.CONTAINS_ALL):
        kinds = _LIST_KINDS[element]
        if not kinds:
            errors.add(f"{path}.operator", f"field {f.field!r} ({label}) has no list operand type", "INVALID_FILTER")
            return _INVALID
        describe = f"{_OP.Name(f.operator)} on {f.field!r} takes a list of {type_name(element)}"
        value = _operand(f.value, element, kinds, vpath, errors, describe)
    else:  # IS_NULL
        value = _operand(f.value, element, ("bool_value",), vpath, errors, "IS_NULL takes a bool (true: absent)")
    return _INVALID if value is _INVALID else Condition(f.field, op, value)


def _filter(
    node: common_pb2.Filter, fields: Mapping[str, MetadataType], path: str, depth: int, errors: Violations
) -> Filter | _Invalid | _MatchAll:
    if depth > MAX_FILTER_DEPTH:
        errors.add(path, f"the filter tree is deeper than {MAX_FILTER_DEPTH} levels", "FILTER_TOO_DEEP")
        return _INVALID
    kind = node.WhichOneof("kind")
    if kind is None:
        return _MATCH_ALL
    if kind == "field":
        return _field_filter(node.field, fields, f"{path}.field", errors)
    composite = node.composite
    cpath = f"{path}.composite"
    if composite.operator not in (common_pb2.LOGICAL_OPERATOR_AND, common_pb2.LOGICAL_OPERATOR_OR):
        errors.add(f"{cpath}.operator", "a logical operator (AND or OR) is required", "INVALID_FILTER")
    if not composite.filters:
        errors.add(f"{cpath}.filters", "a composite filter needs at least one operand", "INVALID_FILTER")
        return _INVALID
    operands = [
        _filter(child, fields, f"{cpath}.filters[{i}]", depth + 1, errors) for i, child in enumerate(composite.filters)
    ]
    if errors:
        return _INVALID
    if composite.operator == common_pb2.LOGICAL_OPERATOR_OR:
        if any(o is _MATCH_ALL for o in operands):
            return _MATCH_ALL
        return any_of([o for o in operands if not isinstance(o, (_MatchAll, _Invalid))])
    kept = [o for o in operands if not isinstance(o, (_MatchAll, _Invalid))]
    return all_of(kept) if kept else _MATCH_ALL


def filter_from_pb(node: common_pb2.Filter, info: CollectionInfo, path: str = "filter") -> Filter | None:
    """The domain filter for ``node``, or None when it matches every chunk; InvalidArgument names each bad node."""
    errors = Violations()
    result = _filter(node, filter_fields(info), path, 1, errors)
    errors.raise_if_any()
    return None if isinstance(result, (_MatchAll, _Invalid)) else result


__all__ = ["MAX_FILTER_DEPTH", "filter_fields", "filter_from_pb"]
