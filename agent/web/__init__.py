"""`logagent web`: a viewer over the store (never the Docker socket), live, for one host or a
fleet. server.py serves (reading through storage/reader.py), query.py checks what a URL
asks, live.py follows the store for the live tails (storage/follow.py); auth.py decides
who may; static/ is the page."""
