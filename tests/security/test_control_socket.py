"""No gunicorn control socket is shared between functions.

gunicorn 27 opens a control socket in every master, by default at
``$HOME/.gunicorn/gunicorn.ctl``: the same path for auth, stock and order, so
the last master to start took it from the others, and anything that can write
to it under the same home could command whichever master owned it. flashsale
never uses it: each master starts with ``--no-control-socket``
(``shared.serving.gunicorn_argv``).

The test starts two functions under real gunicorn and reads what each running
master was started with, through gunicorn's own option parser, and what each
announced in its log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from gunicorn.config import Config

from ops.devstack import Stack, local_stack

pytestmark = pytest.mark.integration
FUNCTIONS = ("stock", "order")
ANNOUNCED = re.compile(r"Control socket listening at (\S+)")


@pytest.fixture
def two_functions(tmp_path: Path) -> Iterator[Stack]:
    with local_stack(tmp_path, functions=FUNCTIONS, extra_env={"WORKERS": "1"}) as (stack, _):
        yield stack


def control_socket(master: int) -> str | None:
    """The control socket a running gunicorn master was configured with (None: disabled), by gunicorn's own parser."""
    argv = Path(f"/proc/{master}/cmdline").read_bytes().decode().split("\0")[:-1]
    options = argv[next(i for i, arg in enumerate(argv) if arg.endswith("gunicorn")) + 1 :]
    config = Config()
    for name, value in vars(config.parser().parse_args(options)).items():
        if value is not None and name in config.settings:
            config.set(name, value)
    return None if config.control_socket_disable else str(config.control_socket)


def test_no_two_functions_share_a_control_socket(two_functions: Stack) -> None:
    # Bug caught: both masters announced "Control socket listening at $HOME/.gunicorn/gunicorn.ctl".
    sockets = {function: control_socket(two_functions.processes[function].pid) for function in FUNCTIONS}
    assert sockets == dict.fromkeys(FUNCTIONS), sockets  # none at all: flashsale never uses one
    assert two_functions.log_dir is not None
    announced = {f: ANNOUNCED.findall((two_functions.log_dir / f"{f}.log").read_text()) for f in FUNCTIONS}
    assert announced == {f: [] for f in FUNCTIONS}, announced
