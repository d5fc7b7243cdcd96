"""PFENet: prior-guided feature enrichment (Tian et al., TPAMI 2020); declares ``pfenet``."""

from fsseg_methods.pfenet.declaration import PFENetDeclaration, PFENetParams

__all__ = ["PFENetDeclaration", "PFENetParams"]
