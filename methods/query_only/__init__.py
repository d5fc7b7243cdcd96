"""A support-blind control (registers ``query_only``): segments the query without reading its support."""

from fsseg_methods.query_only.model import QueryOnly, QueryOnlyParams

__all__ = ["QueryOnly", "QueryOnlyParams"]
