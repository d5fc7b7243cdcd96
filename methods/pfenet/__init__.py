"""PFENet: prior-guided feature enrichment (Tian et al., TPAMI 2020); registers ``pfenet``."""

from fsseg_methods.pfenet.model import PFENet, PFENetParams

__all__ = ["PFENet", "PFENetParams"]
