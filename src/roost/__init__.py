"""Roost: a self-hosted platform-as-a-service for Python web sites and daemons."""

__version__ = "0.3.0.dev0"
