"""Collectors (one stream each, writing to a sink) and the manager that owns them."""
