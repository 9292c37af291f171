"""`logagent web`: a viewer over the store (never the Docker socket), live, for one host or a
fleet. server.py serves; queries.py reads; auth.py decides who may; static/ is the page."""
