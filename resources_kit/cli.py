"""``flask resources``: every registered resource, its rules, scope, callbacks, and what
its row policy reports (unique values across tenants); ``--check-row-level-security``
checks the database's policies. With a ``Jobs`` extension: ``relay``, ``jobs``, ``retry``
and ``worker``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click
from flask import current_app
from flask.sansio.app import App

from .callbacks import OPERATIONS, PHASES
from .database import row_level_security_problems
from .extension import app_state
from .links import LINK_OPERATIONS
from .nesting import Mount
from .options import options_for
from .tenancy import TenantScopeMixin, cross_tenant_uniques


def install_cli(app: App, prefix: str, mounts: Sequence[Mount]) -> None:
    """``flask resources``: every registered resource, its rules, scope and callbacks."""
    state = app_state(app)
    routers: list[tuple[str, Sequence[Mount]]] = state["routers"]
    if all(existing is not mounts for _, existing in routers):
        routers.append((prefix, mounts))
    resources_group(app)


def resources_group(app: App) -> click.Group:
    """The ``flask resources`` group, made once per app: alone, it lists the resources;
    the jobs extension adds its commands to it."""
    state = app_state(app)
    if "cli" in state:
        group: click.Group = state["cli"]
        return group
    routers: list[tuple[str, Sequence[Mount]]] = state["routers"]

    @app.cli.group("resources", invoke_without_command=True)
    @click.option(
        "--check-row-level-security",
        is_flag=True,
        help="Check, on the app's database, the policies row_level_security relies on.",
    )
    @click.pass_context
    def resources_command(context: click.Context, check_row_level_security: bool) -> None:
        """List the resources the routers registered."""
        if context.invoked_subcommand is not None:
            return
        for url_prefix, each in routers:
            for mount in each:
                describe_mount(url_prefix, mount)
        if check_row_level_security:
            check_policies([mount for _, each in routers for mount in each])

    state["cli"] = resources_command
    return resources_command


def check_policies(mounts: Sequence[Mount]) -> None:
    """Report what row-level security lacks on the app's database; exit 1 if anything."""
    tables = {
        options_for(mount.resource).model: mount.row_level_security
        for mount in mounts
        if mount.row_level_security
    }
    if not tables:
        click.echo("row-level security: no resource uses it")
        return
    engine = current_app.extensions["sqlalchemy"].engine
    with engine.connect() as connection:
        problems = row_level_security_problems(connection, tables)
    for problem in problems:
        click.echo(f"row-level security: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"row-level security: {len(tables)} table(s) enforce their policies")


def describe_mount(prefix: str, mount: Mount) -> None:
    resource = mount.resource
    click.echo(f"{resource.__name__}  ({mount.endpoint})")
    rules = [(mount.rule, mount.collection_methods), (mount.item_rule, mount.item_methods)]
    rules += [(mount.action_rule(extra), extra.methods) for extra in mount.extra_actions]
    for rule, methods in rules:
        if methods:
            click.echo(f"  {', '.join(methods):<24} {prefix}{rule}")
    chain = mount.chain()
    scope = [m.resource.__name__ for m in chain if issubclass(m.resource, TenantScopeMixin)]
    parents = " > ".join(m.resource.__name__ for m in chain[:-1])
    click.echo(f"  tenant scope: {', '.join(scope) or 'none'}")
    click.echo(f"  parent chain: {parents or 'none'}")
    if mount.link is not None:
        parent_model = options_for(chain[-2].resource).model.__name__
        click.echo(f"  links: {parent_model}.{mount.link.name} (many-to-many)")
    if mount.row_level_security:
        click.echo(f"  row-level security: {', '.join(mount.row_level_security)}")
    columns = getattr(resource, "scope_columns", None) or mount.row_level_security
    if columns:
        spanning = cross_tenant_uniques(options_for(resource).model, columns)
        shown = "; ".join(", ".join(names) for names in spanning)
        click.echo(f"  unique across tenants: {shown or 'none'}")
    callbacks = [
        f"{phase}_{operation}: "
        + ", ".join(c.__name__ for c in getattr(resource, f"{phase}_{operation}_callbacks"))
        for phase in PHASES
        for operation in (*OPERATIONS, *LINK_OPERATIONS)
        if getattr(resource, f"{phase}_{operation}_callbacks", ())
    ]
    click.echo(f"  callbacks: {'; '.join(callbacks) or 'none'}")


# -- background work ----------------------------------------------------------------------


def install_jobs_cli(app: App, jobs: Any) -> None:
    """``flask resources relay|jobs|retry|worker`` for a ``Jobs`` extension."""
    group = resources_group(app)
    if "relay" in group.commands:
        return

    @group.command("relay")
    @click.option("--every", type=float, default=None, help="Run again every SECONDS.")
    @click.option("--rounds", type=int, default=None, help="With --every: stop after N runs.")
    def relay_command(every: float | None, rounds: int | None) -> None:
        """Redeliver every job not claimed in time, lost with its worker, or due a retry."""
        done = 0
        while True:
            click.echo(f"relay: {jobs.relay()} job(s) redelivered")
            done += 1
            if every is None or (rounds is not None and done >= rounds):
                return
            time.sleep(every)

    @group.command("jobs")
    @click.option("--status", "statuses", multiple=True, help="Only jobs with this status.")
    @click.option("--limit", type=int, default=50)
    def jobs_command(statuses: tuple[str, ...], limit: int) -> None:
        """List jobs, newest first: id, status, attempts, task, problem."""
        for job in jobs.listing(statuses, limit):
            detail = (job.problem or {}).get("detail", "")
            click.echo(f"{job.id}  {job.status:<9} {job.attempts}  {job.task}  {detail}".rstrip())

    @group.command("retry")
    @click.argument("ids", nargs=-1)
    @click.option("--all-failed", is_flag=True, help="Every failed job.")
    def retry_command(ids: tuple[str, ...], all_failed: bool) -> None:
        """Run failed jobs again, with fresh attempts."""
        if not ids and not all_failed:
            raise click.UsageError("Name job ids, or pass --all-failed.")
        found = jobs.retry(None if all_failed else list(ids))
        click.echo(f"retry: {len(found)} job(s) queued again")

    @group.command("worker", context_settings={"ignore_unknown_options": True})
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def worker_command(argv: tuple[str, ...]) -> None:
        """Run a Celery worker for the jobs (extra arguments go to ``celery worker``)."""
        jobs.worker(list(argv))
