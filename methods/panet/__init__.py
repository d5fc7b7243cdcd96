"""PANet baseline (registers itself as ``panet``)."""

from methods.panet.model import PANet

__all__ = ["PANet"]
