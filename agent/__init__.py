"""logagent: collect every Docker container's logs on a host into a database."""
