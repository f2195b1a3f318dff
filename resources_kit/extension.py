"""What a router installs on a Flask app besides its resources' URL rules: problem+json
for every HTTP error under its prefix, the ``flask resources`` command, and the OpenAPI
document with its docs page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import click
from flask import Response, current_app, request, send_from_directory, url_for
from flask.sansio.app import App
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import HTTPException

from .callbacks import OPERATIONS, PHASES
from .database import row_level_security_problems
from .errors import HTTPError, problem_response
from .nesting import Mount
from .openapi import docs_page
from .options import options_for
from .tenancy import TenantScopeMixin

if TYPE_CHECKING:
    from collections.abc import Sequence


def app_state(app: App) -> dict[str, Any]:
    """What the routers of one app share: API prefixes, mounts per router, what is
    installed."""
    state: dict[str, Any] = app.extensions.setdefault(
        "resources_kit", {"prefixes": set(), "routers": []}
    )
    return state


def install_error_handler(app: App, prefix: str) -> None:
    """Make every HTTP error under ``prefix`` (Flask's own 404, 405 and 500 included)
    problem+json. Errors elsewhere go to the handler the app had before, or Flask's own."""
    state = app_state(app)
    prefixes: set[str] = state["prefixes"]
    prefixes.add(prefix)
    if "handler" in state:
        return
    previous = app.error_handler_spec[None][None].get(HTTPException)

    def handle_http_exception(exc: HTTPException) -> Any:
        path = request.path
        if any(path == p or path.startswith(p + "/") for p in prefixes):
            return problem_response(exc)
        return previous(exc) if previous is not None else exc

    state["handler"] = handle_http_exception
    app.register_error_handler(HTTPException, handle_http_exception)


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
    callbacks = [
        f"{phase}_{operation}: "
        + ", ".join(c.__name__ for c in getattr(resource, f"{phase}_{operation}_callbacks"))
        for phase in PHASES
        for operation in OPERATIONS
        if getattr(resource, f"{phase}_{operation}_callbacks", ())
    ]
    click.echo(f"  callbacks: {'; '.join(callbacks) or 'none'}")


def add_docs_routes(
    add_url_rule: Callable[..., None],
    prefix: str,
    full_prefix: str,
    title: str,
    build: Callable[[str], dict[str, Any]],
) -> None:
    """``{prefix}/openapi.json`` (built at the first request, when every resource is
    registered) and the ``{prefix}/docs`` page with its offline assets."""
    document: dict[str, Any] = {}
    name = "rk_openapi" + full_prefix.replace("/", "_").replace("-", "_")

    def openapi_json() -> Response:
        if not document:
            document.update(build(full_prefix))
        return cast(Response, current_app.json.response(document))

    def docs_html() -> str:
        return docs_page(title, url_for(f".{name}_json"), url_for(f".{name}_docs"))

    def asset(filename: str) -> Response:
        if filename not in ("swagger-ui.css", "swagger-ui-bundle.js"):
            raise HTTPError(404, "No such asset.")
        return send_from_directory(str(swagger_ui_path), filename, max_age=86400)

    add_url_rule(f"{prefix}/openapi.json", endpoint=f"{name}_json", view_func=openapi_json)
    add_url_rule(
        f"{prefix}/docs", endpoint=f"{name}_docs", view_func=docs_html, strict_slashes=False
    )
    add_url_rule(f"{prefix}/docs/<path:filename>", endpoint=f"{name}_asset", view_func=asset)
