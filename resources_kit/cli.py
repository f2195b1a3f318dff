"""``flask resources``: every registered resource, its rules, scope, callbacks, and what
its row policy reports (unique values across tenants); ``--check-row-level-security``
checks the database's policies."""

from __future__ import annotations

from collections.abc import Sequence

import click
from flask import current_app
from flask.sansio.app import App

from .callbacks import OPERATIONS, PHASES
from .database import row_level_security_problems
from .extension import app_state
from .nesting import Mount
from .options import options_for
from .tenancy import TenantScopeMixin, cross_tenant_uniques


def install_cli(app: App, prefix: str, mounts: Sequence[Mount]) -> None:
    """``flask resources``: every registered resource, its rules, scope and callbacks."""
    state = app_state(app)
    routers: list[tuple[str, Sequence[Mount]]] = state["routers"]
    if all(existing is not mounts for _, existing in routers):
        routers.append((prefix, mounts))
    if "cli" in state:
        return
    state["cli"] = True

    @app.cli.command("resources")
    @click.option(
        "--check-row-level-security",
        is_flag=True,
        help="Check, on the app's database, the policies row_level_security relies on.",
    )
    def resources_command(check_row_level_security: bool) -> None:
        """List the resources the routers registered."""
        for url_prefix, each in routers:
            for mount in each:
                describe_mount(url_prefix, mount)
        if check_row_level_security:
            check_policies([mount for _, each in routers for mount in each])


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
        for operation in OPERATIONS
        if getattr(resource, f"{phase}_{operation}_callbacks", ())
    ]
    click.echo(f"  callbacks: {'; '.join(callbacks) or 'none'}")
