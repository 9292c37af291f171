"""Collectors (one stream each) and the manager that owns them."""
