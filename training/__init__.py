"""Data, training pipelines and registration for Keel decision models."""
