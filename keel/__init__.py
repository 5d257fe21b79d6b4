"""Keel: serving and monitoring for business decision models."""

__version__ = "0.1.0"
