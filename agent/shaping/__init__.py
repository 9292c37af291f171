"""Pure: what a container's hints do to its lines between the decoder and the store.

Multiline events (multiline.py), levels (levels.py), line filters and the rate limit
(rate.py), put together per container by `Shaper` (shaper.py). No I/O here.
"""
