"""Alerts: rules over the committed store, delivered once (issue 25)."""
