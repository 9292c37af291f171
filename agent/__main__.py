"""`python -m agent` is the `logagent` command."""

import sys

from agent.cli import main

sys.exit(main())
