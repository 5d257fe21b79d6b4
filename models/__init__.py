"""Decision models loaded from sealed, pickle-free bundles."""
