"""batch_racers under gevent, patched before anything else is imported, as gunicorn's gevent worker does."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from tests.concurrency.batch_racers import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:], gevent=True)
