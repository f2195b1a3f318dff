"""``Router``: registers resources on an app or blueprint, nesting children under parents.

Lifecycle: ``register()`` checks a resource and records where it is mounted (under every
mount of its parent, to any depth); ``init_app(app)`` adds the URL rules, or, for a
blueprint, registering the blueprint on an app does. A resource registered after
``init_app(app)`` has its rules added at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from flask import Blueprint, Flask
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App

from .actions import ACTIONS, BULK_PATCH, extra_actions
from .apidocs import add_docs_routes
from .cli import install_cli
from .database import check_backend, check_read_replica
from .errors import ImproperlyConfigured
from .extension import install_error_handler
from .links import compile_link
from .nesting import Mount, Registry, find_parent_key
from .openapi import build_document
from .options import options_for, restricts_rows
from .resource import Resource
from .tenancy import TenantScopeMixin, warn_cross_tenant_uniques

R = TypeVar("R", bound=type[Resource])


def _methods(resource: type[Resource], kind: str) -> tuple[str, ...]:
    return tuple(
        method
        for (rule_kind, method), action in ACTIONS.items()
        if rule_kind == kind
        and (
            "patch" in options_for(resource).bulk  # served by resources_kit.bulk
            if action == BULK_PATCH
            else callable(getattr(resource, action, None))
        )
    )


def _cacheable(resource: type[Resource], parent: Mount | None) -> bool:
    """Whether no level of the chain overrides ``get_query()`` or narrows rows by caller."""
    own = resource.get_query is Resource.get_query and not restricts_rows(resource)
    return own and (parent is None or parent.cacheable)


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
        row_level_security: Sequence[str] = (),
    ) -> None:
        if url_prefix and not url_prefix.startswith("/"):
            raise ImproperlyConfigured(f"Router url_prefix must start with '/': {url_prefix!r}.")
        self.url_prefix = url_prefix.rstrip("/")
        #: Every place a resource is mounted on this router.
        self.registry = Registry()
        #: OpenAPI ``info.title`` and ``info.version``.
        self.title, self.version = title, version
        #: OpenAPI security schemes (``{"bearer": {"type": "http", "scheme": "bearer"}}``) and
        #: the requirement for every operation (``[{"bearer": []}]``).
        self.security_schemes, self.security = security_schemes, security
        #: Serve ``{url_prefix}/openapi.json`` and the ``{url_prefix}/docs`` page.
        self.docs = docs
        #: Scope columns PostgreSQL enforces with row-level security for every
        #: tenant-scoped resource that does not set its own ``row_level_security``.
        self.row_level_security = tuple(row_level_security)
        self._apps: list[Flask] = []
        self._checked = False
        if app_or_blueprint is not None:
            self.init_app(app_or_blueprint)

    @property
    def mounts(self) -> list[Mount]:
        """Every place a resource is mounted on this router (``registry.mounts``)."""
        return self.registry.mounts

    # -- registration -----------------------------------------------------------------------

    def register(
        self, resource: R, *, parent: type[Resource] | None = None, parent_field: str | None = None
    ) -> R:
        """Register ``resource`` (checked now, routes built at ``init_app``), at the top
        level or nested under ``parent``; ``parent_field`` names the child's foreign key
        when the models do not say which one it is."""
        if not (isinstance(resource, type) and issubclass(resource, Resource)):
            raise ImproperlyConfigured(
                f"Router.register() takes a Resource class, not {resource!r}."
            )
        resource.check_configuration()
        options = options_for(resource)
        collection, item = _methods(resource, "collection"), _methods(resource, "item")
        extras = tuple(extra_actions(resource))
        if not collection and not item and not extras:
            raise ImproperlyConfigured(
                f"{resource.__name__} has no actions; add mixins such as ListMixin and "
                "RetrieveMixin."
            )
        parents, key, ref = self._parents(resource, parent, parent_field)
        new = [
            Mount(
                resource=resource,
                parent=above,
                parent_key=key,
                parent_ref=ref,
                rule=f"{above.item_rule if above else ''}/{resource.name}",
                endpoint=f"{above.endpoint}_{resource.name}" if above else str(resource.name),
                collection_methods=collection,
                item_methods=item,
                extra_actions=extras,
                cacheable=_cacheable(resource, above),
                row_level_security=self._row_level_security(resource),
                narrowed=resource.get_query is not Resource.get_query,
                rechecks_writes=resource.get_query is not Resource.get_query
                or restricts_rows(resource),
                registry=self.registry,
            )
            for above in parents
        ]
        for mount in new:
            self._check_mount(mount, options.url_variable)
        self.mounts.extend(new)
        for app in self._apps:  # registered after init_app: checked at the first request
            if self._checked:
                self._checked = False
                app.before_request(self._check_late_mounts)
            self._check_database(app)
            for mount in new:
                _add_rules(app.add_url_rule, self.url_prefix, mount)
        return resource

    def register_links(
        self, parent: type[Resource], relationship: str, target: type[Resource]
    ) -> None:
        """Mount the many-to-many ``relationship`` of ``parent``'s model under every mount
        of ``parent``: ``GET .../<relationship>`` lists the linked rows (``target``'s
        list, its own row policy, restricted to the rows linked to that parent), ``PUT
        .../<relationship>/<id>`` links a row and ``DELETE`` unlinks it (204). Register
        ``parent`` and ``target`` first; ``target`` must serve the relationship's model."""
        for resource, role in ((parent, "parent"), (target, "target")):
            if not (isinstance(resource, type) and issubclass(resource, Resource)):
                raise ImproperlyConfigured(
                    f"Router.register_links() takes Resource classes; the {role} is {resource!r}."
                )
        link = compile_link(
            f"register_links({parent.__name__}, {relationship!r})",
            options_for(parent).model,
            relationship,
            target,
        )
        parents = self.registry.of(parent)
        for resource in (parent, target):
            if not self.registry.of(resource):
                raise ImproperlyConfigured(
                    f"register_links({parent.__name__}, {relationship!r}, {target.__name__}): "
                    f"register {resource.__name__} on this router first; "
                    + (
                        "the links are mounted under its routes."
                        if resource is parent
                        else "its own routes' row policy says which of its rows a caller "
                        "may list and link."
                    )
                )
        listing = ("GET",) if callable(getattr(target, "list", None)) else ()
        new = [
            Mount(
                resource=target,
                parent=above,
                parent_key=None,
                parent_ref=link.parent_ref,
                rule=f"{above.item_rule}/{relationship}",
                endpoint=f"{above.endpoint}_{relationship}",
                collection_methods=listing,
                item_methods=("PUT", "DELETE"),
                cacheable=_cacheable(target, above),
                # as on the target's own mounts (checked, and warned about, there)
                row_level_security=self.registry.of(target)[0].row_level_security,
                narrowed=target.get_query is not Resource.get_query,
                registry=self.registry,
                link=link,
            )
            for above in parents
        ]
        for mount in new:
            self._check_mount(mount, options_for(target).url_variable)
        self.mounts.extend(new)
        for app in self._apps:
            for mount in new:
                _add_rules(app.add_url_rule, self.url_prefix, mount)

    def _parents(
        self, resource: type[Resource], parent: type[Resource] | None, parent_field: str | None
    ) -> tuple[list[Mount | None], str | None, str | None]:
        """Every mount of the parent (``[None]`` at the top level), and the child's foreign
        key to the parent with the column it refers to."""
        if parent is None:
            if parent_field is not None:
                raise ImproperlyConfigured(
                    f"{resource.__name__}: parent_field= needs parent= as well."
                )
            return [None], None, None
        parents: list[Mount | None] = list(self.registry.of(parent))
        if not parents:
            parent_name = getattr(parent, "__name__", parent)
            raise ImproperlyConfigured(
                f"{resource.__name__}: register the parent {parent_name} on this router "
                "before its children."
            )
        key, ref = find_parent_key(resource, parent, parent_field)
        return parents, key, ref

    def _row_level_security(self, resource: type[Resource]) -> tuple[str, ...]:
        if not issubclass(resource, TenantScopeMixin):
            return ()
        own = resource.row_level_security
        columns = tuple(self.row_level_security if own is None else own)
        options = options_for(resource)
        for column in columns:
            options.column(column)  # a misspelled column must not leave a table unguarded
        if columns and resource.scope_columns is None:  # the scope columns, known here
            warn_cross_tenant_uniques(resource, columns)
        return columns

    def _check_mount(self, mount: Mount, url_variable: str) -> None:
        taken = {m.endpoint for m in self.mounts}
        if mount.endpoint in taken:
            raise ImproperlyConfigured(
                f"{mount.resource.__name__} is registered twice at {mount.rule!r}; register it "
                "once per place."
            )
        parent = mount.parent
        clash = [e for e in parent.extra_actions if e.detail] if parent is not None else []
        if any(extra.url_path == mount.resource.name for extra in clash):
            raise ImproperlyConfigured(
                f"{mount.resource.__name__}: its URL segment {mount.resource.name!r} is an "
                f"@action of {parent.resource.__name__ if parent else ''} at the same place; "
                "rename one of them (url_path= on the action)."
            )
        ancestors = [options_for(m.resource).url_variable for m in mount.chain()[:-1]]
        if url_variable in ancestors:
            raise ImproperlyConfigured(
                f"{mount.resource.__name__}: the URL variable {url_variable!r} is already used "
                f"by a parent at {mount.rule!r}; set `url_variable` on one of them."
            )

    def _check_database(self, app: Flask | App) -> None:
        """Refuse at startup what the app's database settings cannot serve: row-level
        security off PostgreSQL, a read replica bind the app does not define."""
        guarded = [m for m in self.mounts if m.row_level_security]
        if guarded:
            url = app.config.get("SQLALCHEMY_DATABASE_URI")
            check_backend(url, guarded[0].resource.__name__)
        check_read_replica(app.config)

    # -- building ---------------------------------------------------------------------------

    def init_app(self, app_or_blueprint: Flask | Blueprint) -> None:
        """Add the URL rules (for a blueprint: when it is registered on an app)."""
        if isinstance(app_or_blueprint, Blueprint):
            app_or_blueprint.record(self._on_blueprint)
            return
        app = app_or_blueprint
        self._check_mounts()
        for mount in self.mounts:
            _add_rules(app.add_url_rule, self.url_prefix, mount)
        self._add_docs(app.add_url_rule, self.url_prefix, self.url_prefix)
        install_error_handler(app, self.url_prefix)
        install_cli(app, self.url_prefix, self.mounts)
        self._check_database(app)
        self._apps.append(app)

    def _check_mounts(self) -> None:
        """What can be checked only once every resource is registered: that the row
        policy can be applied on every path of every mount."""
        for mount in self.mounts:
            mount.resource.check_mount(mount)
        self._checked = True

    def _check_late_mounts(self) -> None:
        # A resource registered after init_app(app) (its children may follow it) is
        # checked before the first request that could use it.
        if not self._checked:
            self._check_mounts()

    def _on_blueprint(self, state: BlueprintSetupState) -> None:
        self._check_mounts()
        self._check_database(state.app)
        for mount in self.mounts:
            _add_rules(state.add_url_rule, self.url_prefix, mount)
        full_prefix = (state.url_prefix or "").rstrip("/") + self.url_prefix
        self._add_docs(state.add_url_rule, self.url_prefix, full_prefix)
        install_error_handler(state.app, full_prefix)
        install_cli(state.app, full_prefix, self.mounts)

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
        if self.docs:
            add_docs_routes(add_url_rule, prefix, full_prefix, self.title, self.openapi)


def _add_rules(add_url_rule: Callable[..., None], prefix: str, mount: Mount) -> None:
    rules: list[tuple[str, str, str, Sequence[str], Any]] = [
        ("collection", mount.rule, mount.collection_endpoint, mount.collection_methods, None),
        ("item", mount.item_rule, mount.item_endpoint, mount.item_methods, None),
    ]
    for extra in mount.extra_actions:
        kind = "item" if extra.detail else "collection"
        rules.append(
            (kind, mount.action_rule(extra), mount.action_endpoint(extra), extra.methods, extra)
        )
    for kind, rule, endpoint, methods, extra in rules:
        if methods:
            add_url_rule(
                prefix + rule,
                endpoint=endpoint,
                view_func=mount.resource.as_view(endpoint, mount, kind, extra),
                methods=list(methods),
                strict_slashes=False,  # /teachers/ answers like /teachers, no redirect
            )
