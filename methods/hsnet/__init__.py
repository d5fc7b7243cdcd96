"""HSNet: hypercorrelation squeeze (Min, Lee, Cho, ICCV 2021); declares ``hsnet``."""

from fsseg_methods.hsnet.declaration import HSNetDeclaration, HSNetParams

__all__ = ["HSNetDeclaration", "HSNetParams"]
