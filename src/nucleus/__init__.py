"""Nucleus: the Python edition of the framework. This distribution ships ``nucleus.stream``."""

__version__ = "0.1.0"
