"""Colour-only prototype floor (declares ``colour_floor``; the network registers itself from ``model.py``)."""

from fsseg_methods.colour_floor.declaration import ColourFloorDeclaration, ColourFloorParams

__all__ = ["ColourFloorDeclaration", "ColourFloorParams"]
