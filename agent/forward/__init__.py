"""Forwarding: the committed store handed on, each destination from its own position."""
