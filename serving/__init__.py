"""Keel serving."""
