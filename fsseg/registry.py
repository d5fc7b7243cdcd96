"""Name → class registries for methods and datasets.

A method registers itself with ``@METHODS.register("name")`` in its own package under ``methods/``;
a dataset adapter does the same with ``DATASETS`` under ``datasets/``. Those folders install as the
packages ``fsseg_methods`` and ``fsseg_datasets`` (``[tool.setuptools] package-dir`` in pyproject.toml:
a top-level ``datasets`` would shadow Hugging Face's). Both import their sub-packages, so importing them
fills the registries.

A method's package imports only its torch-free declaration (``@METHODS.declare("name")``, see
:mod:`fsseg.declaration`); :meth:`Registry.declaration` reads it, so config validation and the
workflow's plan never import torch, and :meth:`Registry.get` imports the network's module on first use.
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
        self._declared: dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise RegistryError(f"{self.kind} name {name!r} is registered twice")
            self._entries[name] = obj
            obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def declare(self, name: str) -> Callable[[type], type]:
        """Register a torch-free declaration whose ``model_module`` (relative to its package) registers the
        class itself under the same name when imported."""

        def decorator(declaration: type) -> type:
            if name in self._declared and self._declared[name] is not declaration:
                raise RegistryError(f"{self.kind} name {name!r} is declared twice")
            self._declared[name] = declaration
            declaration.registry_name = name  # type: ignore[attr-defined]
            return declaration

        return decorator

    def _load_providers(self) -> None:
        importlib.import_module(self._provider_package)

    def _unknown(self, name: str) -> RegistryError:
        known = ", ".join(sorted({*self._entries, *self._declared})) or "(none)"
        return RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")

    def get(self, name: str) -> T:
        self._load_providers()
        if name not in self._entries and name in self._declared:
            declaration = self._declared[name]
            package = declaration.__module__.rpartition(".")[0]
            importlib.import_module(declaration.model_module, package)  # type: ignore[attr-defined]
            if name not in self._entries:
                raise RegistryError(
                    f"{self.kind} {name!r}: importing {declaration.model_module} of {package} registered "  # type: ignore[attr-defined]
                    f"no class under that name"
                )
        try:
            return self._entries[name]
        except KeyError:
            raise self._unknown(name) from None

    def declaration(self, name: str) -> type:
        """What the entry declares about itself without importing its class's module (torch): the
        declaration when one was registered, else the registered class, which carries the same attributes."""
        self._load_providers()
        if name in self._declared:
            return self._declared[name]
        if name in self._entries:
            return self._entries[name]  # type: ignore[return-value]
        raise self._unknown(name)

    def names(self) -> list[str]:
        self._load_providers()
        return sorted({*self._entries, *self._declared})


METHODS: Registry = Registry("method", "fsseg_methods")
DATASETS: Registry = Registry("dataset", "fsseg_datasets")
