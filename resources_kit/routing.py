"""``Router``: registers resources on an app or blueprint, nesting children under parents.

Lifecycle: ``register()`` checks a resource and records where it is mounted (under every
mount of its parent, to any depth); ``init_app(app)`` adds the URL rules, or, for a
blueprint, registering the blueprint on an app does. A resource registered after
``init_app(app)`` has its rules added at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, request, send_from_directory, url_for
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from sqlalchemy.orm import Mapper
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import HTTPException

from .errors import HTTPError, ImproperlyConfigured, problem_response
from .openapi import build_document, docs_page
from .options import ACTIONS, options_for
from .resource import Resource

R = TypeVar("R", bound=type[Resource])


@dataclass(frozen=True, eq=False)
class Mount:
    """One place a resource is mounted: its parent chain and its two URL rules."""

    resource: type[Resource]
    parent: Mount | None
    #: Attribute of the child model holding the foreign key to the parent.
    parent_key: str | None
    #: Attribute of the parent model that foreign key refers to.
    parent_ref: str | None
    #: The collection rule, relative to the router's prefix.
    rule: str
    #: Endpoint prefix: the names of the chain joined by ``_`` (``teachers_students``).
    endpoint: str
    collection_methods: tuple[str, ...]
    item_methods: tuple[str, ...]

    @property
    def item_rule(self) -> str:
        options = options_for(self.resource)
        return f"{self.rule}/<{options.converter}:{options.url_variable}>"

    @property
    def collection_endpoint(self) -> str:
        return f"{self.endpoint}_collection"

    @property
    def item_endpoint(self) -> str:
        return f"{self.endpoint}_item"

    @property
    def has_item_route(self) -> bool:
        return bool(self.item_methods)

    def chain(self) -> list[Mount]:
        """This mount and its ancestors, root first."""
        mounts: list[Mount] = []
        mount: Mount | None = self
        while mount is not None:
            mounts.insert(0, mount)
            mount = mount.parent
        return mounts


def _methods(resource: type[Resource], kind: str) -> tuple[str, ...]:
    return tuple(
        method
        for (rule_kind, method), action in ACTIONS.items()
        if rule_kind == kind and callable(getattr(resource, action, None))
    )


def find_parent_key(
    child: type[Resource], parent: type[Resource], parent_field: str | None
) -> tuple[str, str]:
    """The child attribute holding the foreign key to the parent, and the parent attribute
    it refers to, found from the models."""
    child_mapper: Mapper[Any] = options_for(child).mapper
    parent_mapper: Mapper[Any] = options_for(parent).mapper
    child_model, parent_model = child_mapper.class_.__name__, parent_mapper.class_.__name__
    if parent_field is not None:
        if parent_field not in child_mapper.column_attrs:
            raise ImproperlyConfigured(
                f"{child.__name__}: parent_field={parent_field!r} is not a column attribute of "
                f"{child_model}."
            )
        columns = child_mapper.column_attrs[parent_field].columns
        fks = [
            fk
            for column in columns
            for fk in getattr(column, "foreign_keys", ())
            if fk.column.table in parent_mapper.tables
        ]
        if len(fks) != 1:
            raise ImproperlyConfigured(
                f"{child.__name__}: {child_model}.{parent_field} has no foreign key to "
                f"{parent_model}; pass parent_field= naming the column that refers to it."
            )
    else:
        fks = [
            fk
            for table in child_mapper.tables
            for fk in table.foreign_keys
            if fk.column.table in parent_mapper.tables
        ]
        if not fks:
            raise ImproperlyConfigured(
                f"{child.__name__}: {child_model} has no foreign key to {parent_model}; add "
                "one, or pass parent_field= naming the column that refers to it."
            )
        if len(fks) > 1:
            names = ", ".join(sorted(fk.parent.name for fk in fks))
            raise ImproperlyConfigured(
                f"{child.__name__}: {child_model} has {len(fks)} foreign keys to "
                f"{parent_model} ({names}); pass parent_field= to choose one."
            )
    fk = fks[0]
    return (
        child_mapper.get_property_by_column(fk.parent).key,
        parent_mapper.get_property_by_column(fk.column).key,
    )


class Router:
    """Registers resources and builds their URL rules::

        api = Router(url_prefix="/api")
        api.register(TeacherResource)
        api.register(StudentResource, parent=TeacherResource)  # FK found from the models
        api.init_app(app)

    A child registered with ``parent=`` is mounted under every place the parent is mounted.
    Every level of a nested URL is checked, in one statement.
    """

    def __init__(
        self,
        app_or_blueprint: Flask | Blueprint | None = None,
        *,
        url_prefix: str = "",
        title: str = "API",
        version: str = "1.0.0",
        security_schemes: Mapping[str, Mapping[str, Any]] | None = None,
        security: Sequence[Mapping[str, Sequence[str]]] | None = None,
        docs: bool = True,
    ) -> None:
        if url_prefix and not url_prefix.startswith("/"):
            raise ImproperlyConfigured(f"Router url_prefix must start with '/': {url_prefix!r}.")
        self.url_prefix = url_prefix.rstrip("/")
        self.mounts: list[Mount] = []
        #: OpenAPI ``info.title`` and ``info.version``.
        self.title, self.version = title, version
        #: OpenAPI security schemes (``{"bearer": {"type": "http", "scheme": "bearer"}}``) and
        #: the requirement for every operation (``[{"bearer": []}]``).
        self.security_schemes, self.security = security_schemes, security
        #: Serve ``{url_prefix}/openapi.json`` and the ``{url_prefix}/docs`` page.
        self.docs = docs
        self._apps: list[Flask] = []
        if app_or_blueprint is not None:
            self.init_app(app_or_blueprint)

    # -- registration -----------------------------------------------------------------------

    def register(
        self, resource: R, *, parent: type[Resource] | None = None, parent_field: str | None = None
    ) -> R:
        if not (isinstance(resource, type) and issubclass(resource, Resource)):
            raise ImproperlyConfigured(
                f"Router.register() takes a Resource class, not {resource!r}."
            )
        options = options_for(resource)  # checks the configuration
        collection, item = _methods(resource, "collection"), _methods(resource, "item")
        if not collection and not item:
            raise ImproperlyConfigured(
                f"{resource.__name__} has no actions; add mixins such as ListMixin and "
                "RetrieveMixin."
            )
        if parent is None:
            if parent_field is not None:
                raise ImproperlyConfigured(
                    f"{resource.__name__}: parent_field= needs parent= as well."
                )
            new = [
                Mount(
                    resource,
                    None,
                    None,
                    None,
                    f"/{resource.name}",
                    str(resource.name),
                    collection,
                    item,
                )
            ]
        else:
            parents = [mount for mount in self.mounts if mount.resource is parent]
            if not parents:
                parent_name = getattr(parent, "__name__", parent)
                raise ImproperlyConfigured(
                    f"{resource.__name__}: register the parent {parent_name} on this router "
                    "before its children."
                )
            key, ref = find_parent_key(resource, parent, parent_field)
            new = [
                Mount(
                    resource,
                    mount,
                    key,
                    ref,
                    f"{mount.item_rule}/{resource.name}",
                    f"{mount.endpoint}_{resource.name}",
                    collection,
                    item,
                )
                for mount in parents
            ]
        for mount in new:
            self._check_mount(mount, options.url_variable)
        self.mounts.extend(new)
        for app in self._apps:
            for mount in new:
                _add_rules(app.add_url_rule, self.url_prefix, mount)
        return resource

    def _check_mount(self, mount: Mount, url_variable: str) -> None:
        taken = {m.endpoint for m in self.mounts}
        if mount.endpoint in taken:
            raise ImproperlyConfigured(
                f"{mount.resource.__name__} is registered twice at {mount.rule!r}; register it "
                "once per place."
            )
        ancestors = [options_for(m.resource).url_variable for m in mount.chain()[:-1]]
        if url_variable in ancestors:
            raise ImproperlyConfigured(
                f"{mount.resource.__name__}: the URL variable {url_variable!r} is already used "
                f"by a parent at {mount.rule!r}; set `url_variable` on one of them."
            )

    # -- building ---------------------------------------------------------------------------

    def init_app(self, app_or_blueprint: Flask | Blueprint) -> None:
        """Add the URL rules (for a blueprint: when it is registered on an app)."""
        if isinstance(app_or_blueprint, Blueprint):
            app_or_blueprint.record(self._on_blueprint)
            return
        app = app_or_blueprint
        for mount in self.mounts:
            _add_rules(app.add_url_rule, self.url_prefix, mount)
        self._add_docs(app.add_url_rule, self.url_prefix, self.url_prefix)
        install_error_handler(app, self.url_prefix)
        install_cli(app, self)
        self._apps.append(app)

    def _on_blueprint(self, state: BlueprintSetupState) -> None:
        for mount in self.mounts:
            _add_rules(state.add_url_rule, self.url_prefix, mount)
        full_prefix = (state.url_prefix or "").rstrip("/") + self.url_prefix
        self._add_docs(state.add_url_rule, self.url_prefix, full_prefix)
        install_error_handler(state.app, full_prefix)
        install_cli(state.app, self)

    # -- OpenAPI ------------------------------------------------------------------------------

    def openapi(self, prefix: str | None = None) -> dict[str, Any]:
        """The OpenAPI 3 document of the routes registered so far."""
        return build_document(
            self.mounts,
            self.url_prefix if prefix is None else prefix,
            title=self.title,
            version=self.version,
            security_schemes=self.security_schemes,
            security=self.security,
        )

    def _add_docs(self, add_url_rule: Callable[..., None], prefix: str, full_prefix: str) -> None:
        if not self.docs:
            return
        document: dict[str, Any] = {}
        name = "rk_openapi" + full_prefix.replace("/", "_").replace("-", "_")

        def openapi_json() -> Response:
            if not document:  # built at the first request: every resource is registered
                document.update(self.openapi(full_prefix))
            return cast(Response, current_app.json.response(document))

        def docs_html() -> str:
            return docs_page(self.title, url_for(f".{name}_json"), url_for(f".{name}_docs"))

        def asset(filename: str) -> Response:
            if filename not in ("swagger-ui.css", "swagger-ui-bundle.js"):
                raise HTTPError(404, "No such asset.")
            return send_from_directory(str(swagger_ui_path), filename, max_age=86400)

        add_url_rule(f"{prefix}/openapi.json", endpoint=f"{name}_json", view_func=openapi_json)
        add_url_rule(
            f"{prefix}/docs", endpoint=f"{name}_docs", view_func=docs_html, strict_slashes=False
        )
        add_url_rule(f"{prefix}/docs/<path:filename>", endpoint=f"{name}_asset", view_func=asset)


def _add_rules(add_url_rule: Callable[..., None], prefix: str, mount: Mount) -> None:
    for kind, rule, endpoint, methods in (
        ("collection", mount.rule, mount.collection_endpoint, mount.collection_methods),
        ("item", mount.item_rule, mount.item_endpoint, mount.item_methods),
    ):
        if methods:
            add_url_rule(
                prefix + rule,
                endpoint=endpoint,
                view_func=mount.resource.as_view(endpoint, mount, kind),
                methods=list(methods),
                strict_slashes=False,  # /teachers/ answers like /teachers, no redirect
            )


def _app_state(app: App) -> dict[str, Any]:
    """What the routers of one app share: API prefixes, routers, what is installed."""
    state: dict[str, Any] = app.extensions.setdefault(
        "resources_kit", {"prefixes": set(), "routers": []}
    )
    return state


def install_error_handler(app: App, prefix: str) -> None:
    """Make every HTTP error under ``prefix`` (Flask's own 404, 405 and 500 included)
    problem+json. Errors elsewhere go to the handler the app had before, or Flask's own."""
    state = _app_state(app)
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


def install_cli(app: App, router: Router) -> None:
    """``flask resources``: every registered resource, its rules, scope and callbacks."""
    state = _app_state(app)
    routers: list[Router] = state["routers"]
    if router not in routers:
        routers.append(router)
    if "cli" in state:
        return
    state["cli"] = True

    @app.cli.command("resources")
    def resources_command() -> None:
        """List the resources the routers registered."""
        import click

        from .callbacks import OPERATIONS, PHASES
        from .tenancy import TenantScopeMixin

        for each in routers:
            for mount in each.mounts:
                resource = mount.resource
                click.echo(f"{resource.__name__}  ({mount.endpoint})")
                for rule, methods in (
                    (mount.rule, mount.collection_methods),
                    (mount.item_rule, mount.item_methods),
                ):
                    if methods:
                        click.echo(f"  {', '.join(methods):<24} {each.url_prefix}{rule}")
                scope = [
                    m.resource.__name__
                    for m in mount.chain()
                    if issubclass(m.resource, TenantScopeMixin)
                ]
                parents = " > ".join(m.resource.__name__ for m in mount.chain()[:-1])
                click.echo(f"  tenant scope: {', '.join(scope) or 'none'}")
                click.echo(f"  parent chain: {parents or 'none'}")
                callbacks = [
                    f"{phase}_{operation}: "
                    + ", ".join(
                        c.__name__ for c in getattr(resource, f"{phase}_{operation}_callbacks")
                    )
                    for phase in PHASES
                    for operation in OPERATIONS
                    if getattr(resource, f"{phase}_{operation}_callbacks", ())
                ]
                click.echo(f"  callbacks: {'; '.join(callbacks) or 'none'}")
