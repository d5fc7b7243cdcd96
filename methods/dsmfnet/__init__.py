"""DSMF-Net: dual semantic metric learning fusion (Qi et al., IEEE JSTARS 2025); registers ``dsmfnet``."""

from fsseg_methods.dsmfnet.model import DSMFNet, DSMFNetParams

__all__ = ["DSMFNet", "DSMFNetParams"]
