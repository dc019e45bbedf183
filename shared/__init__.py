"""prodml-functions: the domain logic shared by the functions and the ``prodml`` CLI."""

__version__ = "0.1.0"
