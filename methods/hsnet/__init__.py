"""HSNet: hypercorrelation squeeze (Min, Lee, Cho, ICCV 2021); registers ``hsnet``."""

from fsseg_methods.hsnet.model import HSNet, HSNetParams

__all__ = ["HSNet", "HSNetParams"]
