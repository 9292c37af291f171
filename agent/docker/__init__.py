"""Everything that speaks Docker's Engine API, and the pure decoding of what it sends."""
