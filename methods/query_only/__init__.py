"""A support-blind control (declares ``query_only``): segments the query without reading its support."""

from fsseg_methods.query_only.declaration import QueryOnlyDeclaration, QueryOnlyParams

__all__ = ["QueryOnlyDeclaration", "QueryOnlyParams"]
