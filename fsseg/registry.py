"""Name → class registries for methods and datasets.

A method registers itself with ``@METHODS.register("name")`` in its own package under ``methods/``;
a dataset adapter does the same with ``DATASETS`` under ``datasets/``. Those folders install as the
packages ``fsseg_methods`` and ``fsseg_datasets`` (``[tool.setuptools] package-dir`` in pyproject.toml:
a top-level ``datasets`` would shadow Hugging Face's). Both import their sub-packages, so importing them
fills the registries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from fsseg.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of classes; unknown names raise an error listing the known ones."""

    def __init__(self, kind: str, provider_package: str) -> None:
        self.kind = kind
        self._provider_package = provider_package
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise RegistryError(f"{self.kind} name {name!r} is registered twice")
            self._entries[name] = obj
            obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def _load_providers(self) -> None:
        importlib.import_module(self._provider_package)

    def get(self, name: str) -> T:
        self._load_providers()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        self._load_providers()
        return sorted(self._entries)


METHODS: Registry = Registry("method", "fsseg_methods")
DATASETS: Registry = Registry("dataset", "fsseg_datasets")
