"""``python -m ops.plan``: the command line, in ops/plan/render.py."""

import sys

from ops.plan.render import main

if __name__ == "__main__":
    sys.exit(main())
