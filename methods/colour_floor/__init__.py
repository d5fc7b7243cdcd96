"""Colour-only prototype floor (registers itself as ``colour_floor``)."""

from fsseg_methods.colour_floor.model import ColourFloor

__all__ = ["ColourFloor"]
