"""iSAID-5i (SDM): registers the ``isaid5i`` dataset adapter."""

from fsseg_datasets.isaid5i.adapter import Isaid5i

__all__ = ["Isaid5i"]
