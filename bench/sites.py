"""The deployments the benchmark measures, each started for the run and stopped after it:

- flashsale's three functions as `make run` starts them, with the baseline
  served beside each exactly as that function is;
- auth and order split, each pinned to a CPU of its own, as two pods;
- the monolith: all three in one process group on the same CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import servers
from bench.config import Config, machine_cpus
from ops.devstack import RedisServer, ensure_keys, local_stack
from ops.loadusers import mint_buyers
from shared.serving import worker_plan
from shared.settings import Settings


@dataclass
class Site:
    """Where one deployment answers, and the buyers' credentials for it."""

    urls: dict[str, str]  # function -> base URL
    settings: Settings
    tokens: Path
    users: Path
    masters: dict[str, int] = field(default_factory=dict)  # function -> gunicorn master pid (for py-spy)

    def env(self, sku: str, **knobs: object) -> dict[str, str]:
        urls = {f"{function.upper()}_URL": url for function, url in self.urls.items()}
        return {
            **urls,
            "SKU": sku,
            "TOKENS_FILE": str(self.tokens),
            "USERS_FILE": str(self.users),
            **{name: str(value) for name, value in knobs.items()},
        }


@contextmanager
def main_sites(config: Config, scratch: Path) -> Iterator[dict[str, Site]]:
    """flashsale's three functions as `make run` starts them, and beside each the baseline served the same way."""
    env = config.stack_env()
    with ExitStack() as stack:
        real, _ = stack.enter_context(local_stack(scratch / "main", extra_env=env))
        settings = Settings.from_env(real.env)
        baselines = {
            f: stack.enter_context(servers.baseline(f, env, log_dir=scratch / "main" / "logs")) for f in ("auth", "stock", "order")
        }
        tokens, users = mint_buyers(settings, config.buyers, prefix="bench-").write_files(scratch, "bench")
        yield {
            "baseline": Site(
                {f: s.url for f, s in baselines.items()}, settings, tokens, users, {f: s.master_pid or 0 for f, s in baselines.items()}
            ),
            "flashsale": Site(
                {f: real.url(f) for f in real.functions}, settings, tokens, users, {f: p.pid for f, p in real.processes.items()}
            ),
        }


def pinned() -> dict[str, str]:
    """auth and order each on a CPU of their own, as two pods would be (one CPU each on a 2-core machine)."""
    cpus = machine_cpus()
    return {"auth": str(cpus[0]), "order": str(cpus[1 % len(cpus)])}


def tokens_needed(config: Config) -> int:
    return config.buy_rate * config.duration_s * 2 + 1_000


@contextmanager
def split_site(config: Config, scratch: Path) -> Iterator[Site]:
    """auth and order as separate process groups, each pinned to its own CPU."""
    with local_stack(scratch / "split", functions=("auth", "order"), cpus=pinned(), extra_env=config.stack_env()) as (stack, _):
        settings = Settings.from_env(stack.env)
        tokens, users = mint_buyers(settings, tokens_needed(config), prefix="split-").write_files(scratch / "split", "split")
        urls = {"auth": stack.url("auth"), "order": stack.url("order")}
        yield Site(urls, settings, tokens, users, {f: p.pid for f, p in stack.processes.items()})


@contextmanager
def monolith_site(config: Config, scratch: Path) -> Iterator[Site]:
    """The three functions in one process group (served as order is) on the same CPUs the split used."""
    workdir = scratch / "monolith"
    workdir.mkdir(parents=True, exist_ok=True)
    private, public = ensure_keys(workdir / "keys")
    redis = RedisServer(workdir=workdir).start()
    try:
        env = {
            **config.stack_env(),
            "DATABASE_URL": f"sqlite:///{workdir / 'flashsale.db'}",
            "REDIS_URL": redis.url,
            "JWT_PRIVATE_KEY_FILE": str(private),
            "JWT_PUBLIC_KEY_FILE": str(public),
        }
        cpus = ",".join(sorted(set(pinned().values())))
        with servers.monolith(env, cpus=cpus, log_dir=workdir / "logs") as app:
            settings = Settings.from_env(env)
            tokens, users = mint_buyers(settings, tokens_needed(config), prefix="monolith-").write_files(workdir, "monolith")
            urls = dict.fromkeys(("auth", "stock", "order"), app.url)
            yield Site(urls, settings, tokens, users, {"order": app.master_pid or 0})
    finally:
        redis.stop()


QUIET = {"METRICS": "false", "LOG_LEVEL": "WARNING"}


def observability_envs(config: Config) -> dict[str, dict[str, str]]:
    """The two sides' settings: quiet as the baseline; observed (metrics on, INFO access lines) as flashsale, unless A/A."""
    quiet, observed = {**config.stack_env(), **QUIET}, {**config.stack_env(), "LOG_LEVEL": "INFO"}
    return {"baseline": quiet, "flashsale": quiet if config.observability_same else observed}


@contextmanager
def order_sites(envs: dict[str, dict[str, str]], scratch: Path, buyers: int, prefix: str) -> Iterator[dict[str, Site]]:
    """The order function once per environment, each its own stack (database, Redis, gunicorn) and ``buyers`` of its own."""
    sites: dict[str, Site] = {}
    with ExitStack() as stack:
        for name, env in envs.items():
            workdir = scratch / f"{prefix}-{name}"
            running, _ = stack.enter_context(local_stack(workdir, functions=("order",), extra_env=env))
            settings = Settings.from_env(running.env)
            tokens, users = mint_buyers(settings, buyers, prefix=f"{prefix}-").write_files(workdir, prefix)
            sites[name] = Site({"order": running.url("order")}, settings, tokens, users, {"order": running.processes["order"].pid})
        yield sites


@contextmanager
def observability_sites(config: Config, scratch: Path) -> Iterator[dict[str, Site]]:
    """The order function twice, served alike: with metrics and an INFO access line per request
    (as deployed), and with both off. The quiet one stands where the baseline stands elsewhere.
    With ``config.observability_same`` both are quiet: an A/A run, the spread of the harness alone."""
    with order_sites(observability_envs(config), scratch, config.losers_vus, "observability") as sites:
        yield sites


def worker_counts(settings: Settings) -> dict[str, int]:
    """gunicorn workers per function as shared.serving plans them here; auth's CPUs are its workers times threads."""
    auth = worker_plan("auth", settings)
    return {
        "order": worker_plan("order", settings).workers,
        "stock": worker_plan("stock", settings).workers,
        "auth": auth.workers,
        "auth_cpus": min(auth.workers * auth.threads, len(machine_cpus())),
    }
