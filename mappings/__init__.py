"""Ready-made YAML mappings for real platforms, shipped as package data."""
