"""DSMF-Net: dual semantic metric learning fusion (Qi et al., IEEE JSTARS 2025); declares ``dsmfnet``."""

from fsseg_methods.dsmfnet.declaration import DSMFNetDeclaration, DSMFNetParams

__all__ = ["DSMFNetDeclaration", "DSMFNetParams"]
