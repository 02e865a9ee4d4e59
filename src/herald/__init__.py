"""Herald: a self-hosted, security-first unified message push platform."""

__all__ = ["__version__"]

__version__ = "0.1.0"
