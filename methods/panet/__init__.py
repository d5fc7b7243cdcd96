"""PANet baseline (declares ``panet``; the network registers itself from ``model.py`` when first built)."""

from fsseg_methods.panet.declaration import PANetDeclaration, PANetParams

__all__ = ["PANetDeclaration", "PANetParams"]
