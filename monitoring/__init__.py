"""Keel monitoring."""
