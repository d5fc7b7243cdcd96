"""PANet baseline (registers itself as ``panet``)."""

from fsseg_methods.panet.model import PANet

__all__ = ["PANet"]
