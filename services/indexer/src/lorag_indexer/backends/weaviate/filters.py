"""The Weaviate filter builder: a domain filter tree (``lorag_indexer.domain.Filter``) → ``weaviate.classes.query``.

Operands arrive checked against the field's type (the proto edge did that with the collection's schema), so this is
only a translation: field names to stored property names, operators to the SDK's methods.
"""

from __future__ import annotations

from typing import Any

from weaviate.classes.query import Filter as WeaviateFilter
from weaviate.classes.query import FilterReturn

from lorag_indexer.backends.weaviate.schema import FILTER_PROPERTIES, metadata_property
from lorag_indexer.domain import AllOf, AnyOf, Condition, Filter, FilterOp


def property_of(condition: Condition) -> str:
    """The Weaviate property a condition's field is stored in."""
    key = condition.metadata_key
    if key is not None:
        return metadata_property(key)
    return FILTER_PROPERTIES.get(condition.field, condition.field)


def _condition(condition: Condition) -> FilterReturn:
    prop = WeaviateFilter.by_property(property_of(condition))
    value: Any = condition.value
    op = condition.op
    if op is FilterOp.EQUAL:
        return prop.equal(value)
    if op is FilterOp.NOT_EQUAL:
        return prop.not_equal(value)
    if op is FilterOp.GREATER_THAN:
        return prop.greater_than(value)
    if op is FilterOp.GREATER_OR_EQUAL:
        return prop.greater_or_equal(value)
    if op is FilterOp.LESS_THAN:
        return prop.less_than(value)
    if op is FilterOp.LESS_OR_EQUAL:
        return prop.less_or_equal(value)
    if op is FilterOp.LIKE:
        return prop.like(value)
    if op is FilterOp.CONTAINS_ANY:
        return prop.contains_any(value)
    if op is FilterOp.CONTAINS_ALL:
        return prop.contains_all(value)
    return prop.is_none(bool(value))


def build_filter(node: Filter | None) -> FilterReturn | None:
    """The Weaviate filter for ``node``; None (every chunk) for None."""
    if node is None:
        return None
    if isinstance(node, Condition):
        return _condition(node)
    operands = [build_filter(child) for child in node.operands]
    built = [o for o in operands if o is not None]
    if isinstance(node, AllOf):
        return WeaviateFilter.all_of(built)
    assert isinstance(node, AnyOf)
    return WeaviateFilter.any_of(built)


__all__ = ["build_filter", "property_of"]
