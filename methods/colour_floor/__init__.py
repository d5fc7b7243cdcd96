"""Colour-only prototype floor (registers itself as ``colour_floor``)."""

from methods.colour_floor.model import ColourFloor

__all__ = ["ColourFloor"]
