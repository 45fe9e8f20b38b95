"""Ready-made YAML mappings for real platforms, shipped as package data.

``shipmap.engine.packaged_mapping_names()`` lists them; ``load_mapping("shopify/order")`` loads one by name."""
