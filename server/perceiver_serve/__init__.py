"""perceiver-serve: an inference server for Perceiver IO models."""

__version__ = "0.1.0"
