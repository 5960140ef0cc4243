"""em: a command-line toolkit for research on emergent misalignment."""

__version__ = "0.1.0"
