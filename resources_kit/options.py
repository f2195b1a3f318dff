"""A resource class's configuration, checked and compiled once, then frozen."""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, cast

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy.orm import Mapper, Session, scoped_session
from sqlalchemy.orm.attributes import InstrumentedAttribute

from .actions import VERB_METHODS, extra_actions
from .columns import (
    Check,
    column_check,
    column_normalizer,
    int_bounds,
    round_half_up,
    unwritable,
    url_converter,
)
from .errors import ImproperlyConfigured, unique_columns
from .links import compile_link_fields
from .permissions import Permission, combine
from .querying import FieldPath, SortKey, compile_paths, split_sort

#: Operations whose schema ``Resource.get_schema`` returns.
SCHEMA_OPERATIONS = ("list", "detail", "create", "update", "patch")

#: How many ``?fields=`` subsets of one schema are kept, least recently used dropped first.
SPARSE_SCHEMAS_KEPT = 64


#: ``Resource``'s methods that hold a guard; a subclass defining one is refused at class
#: creation.
GUARDS = (
    "dispatch_request",
    "current_user",
    "visibility_clauses",
    "check_object_permissions",
    "get_scoped_query",
    "guard_query",
    "check_parent",
    "check_object",
    "get_server_values",
    "save",
    "view_at",
    "related_rows",
)


class ResourceConfig:
    """The class attributes a resource declares; :func:`options_for` checks and compiles
    them once per class (a mistake is ``ImproperlyConfigured`` at registration)."""

    #: URL segment and endpoint prefix (``"teachers"``). Required.
    name: ClassVar[str | None] = None
    #: The SQLAlchemy model class. Required.
    model: ClassVar[type[Any] | None] = None
    #: marshmallow schema class: responses, and input where no other schema is given. Required.
    schema: ClassVar[type[ma.Schema] | None] = None
    #: Input schema for POST (default: ``schema``).
    create_schema: ClassVar[type[ma.Schema] | None] = None
    #: Input schema for PUT (default: ``schema``).
    update_schema: ClassVar[type[ma.Schema] | None] = None
    #: Input schema for PATCH, loaded ``partial=True`` (default: ``update_schema``).
    patch_schema: ClassVar[type[ma.Schema] | None] = None
    #: Schema of single-item responses: GET, and the bodies of 201/200 writes (default:
    #: ``schema``). One representation per item keeps ETags comparable across verbs.
    detail_schema: ClassVar[type[ma.Schema] | None] = None
    #: SQLAlchemy session or scoped session (default: the Flask-SQLAlchemy ``db.session``).
    session: ClassVar[Session | scoped_session[Session] | None] = None
    #: Column used in item URLs; its type picks the URL converter (default: primary key).
    lookup_field: ClassVar[str | None] = None
    #: Name of the item URL variable (default: ``<snake_case model name>_id``).
    url_variable: ClassVar[str | None] = None
    #: Allow-list for ``?filters=`` (``"rel.col"`` allowed). Empty: filtering refused.
    filter_fields: ClassVar[Sequence[str]] = ()
    #: Allow-list for ``?sort=``. Empty: sorting refused.
    sort_fields: ClassVar[Sequence[str]] = ()
    #: Columns ``?search=`` looks in. Empty: search refused.
    search_fields: ClassVar[Sequence[str]] = ()
    #: Relationships ``?include=`` may embed, to any depth (``["students",
    #: "students.grades", "school"]``); a path allows its prefixes. Empty: refused.
    include_fields: ClassVar[Sequence[str]] = ()
    #: Relationships of the allow-lists whose rows every caller may match (no resource's
    #: row policy applies to them); any other needs a registered resource of its model.
    public_relationships: ClassVar[Sequence[str]] = ()
    #: Sort when none is asked for (``"name,years_teaching__desc"``); the primary key is
    #: always the final tie-breaker.
    default_sort: ClassVar[str | Sequence[str] | None] = None
    #: Default ``limit`` of a list page.
    page_size: ClassVar[int] = 20
    #: Largest ``limit`` a client may ask for; more is a 400.
    max_page_size: ClassVar[int] = 100
    #: Refuse PUT, PATCH and DELETE without ``If-Match`` (428), so that no client can
    #: overwrite a change it has not seen.
    require_if_match: ClassVar[bool] = False
    #: Loader options (``selectinload(Teacher.students)``) applied to every entity read, so
    #: nested schema fields load without N+1 queries.
    query_options: ClassVar[Sequence[Any]] = ()
    #: View decorators, applied by Flask's ``MethodView.as_view``.
    decorators: ClassVar[list[Callable[..., Any]]] = []
    #: Who may do what: ``Permission`` classes or instances, all of which must allow (see
    #: Permissions in the docs). Empty: anyone the app lets through.
    permissions: ClassVar[Sequence[Any]] = ()
    #: The ``WWW-Authenticate`` challenge of a 401.
    www_authenticate: ClassVar[str] = "Bearer"
    #: Foreign-key column -> the resource whose rows it may name (``"self"``: this one).
    #: A write naming a row outside that resource's row policy for the caller (another
    #: tenant's, hidden by ``visible``, or missing) is a 422.
    references: ClassVar[Mapping[str, type[Any] | str]] = {}
    #: Bulk writes the collection accepts (see Related rows in the docs): ``"create"``
    #: (``POST`` of a JSON array) and ``"patch"`` (``PATCH`` of an array of items with
    #: their ids). Empty: an array body is a 400, as for any resource.
    bulk: ClassVar[Sequence[str]] = ()
    #: Most items one bulk write may hold; more is a 413.
    max_bulk_items: ClassVar[int] = 100

    #: Schema field -> (many-to-many relationship, target resource): the field is a list
    #: of the target's ids that replaces the set of linked rows on create, update and
    #: patch, and dumps the ids of the linked rows the caller may reach (see
    #: Many-to-many in the docs).
    link_fields: ClassVar[Mapping[str, tuple[str, type[Any]]]] = {}

    #: The guards of the class that declares them (``Resource``): never overridden.
    __guards__: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for verb, instead in VERB_METHODS.items():
            if any(verb in vars(klass) for klass in cls.__mro__):
                raise ImproperlyConfigured(
                    f"{cls.__name__} defines {verb}(); resources bind HTTP verbs in one place. "
                    f"Override the action {instead} instead."
                )
        guarded = next((k for k in cls.__mro__[1:] if "__guards__" in vars(k)), None)
        for guard in cast(Any, guarded).__guards__ if guarded is not None else ():
            if getattr(cls, guard) is not getattr(guarded, guard):
                raise ImproperlyConfigured(
                    f"{cls.__name__} overrides {guard}(), which guards the row policy or the "
                    "transaction; override a hook instead (see Extending in the docs): "
                    "get_query() to narrow, get_object(), perform_*()."
                )

    @classmethod
    def check_configuration(cls) -> None:
        """Check and compile the class's configuration; the router calls it at
        registration, and a mistake raises ``ImproperlyConfigured`` naming the fix.
        Cooperative: a mixin placed after ``Resource`` in the MRO is checked too."""
        options_for(cls)
        next_check = getattr(super(), "check_configuration", None)
        if next_check is not None:
            next_check()


def permission_rule(cls: type[Any]) -> Permission | None:
    """A class's ``permissions`` as one rule, made once per class."""
    return options_for(cls).permission


def restricts_rows(cls: type[Any]) -> bool:
    """Whether the class's permissions may narrow the rows a caller sees."""
    rule = permission_rule(cls)
    return rule is not None and rule.restricts_rows()


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z])(?=[a-z])", r"_\1\2", name).lower()


@dataclass(frozen=True)
class ResourceOptions:
    """What a resource class's attributes compile to."""

    #: The resource class (a ``Resource`` subclass).
    resource: type[Any]
    model: type[Any]
    mapper: Mapper[Any]
    lookup_key: str
    lookup_attr: InstrumentedAttribute[Any]
    lookup_check: Check | None
    #: The range of an integer lookup column (an id outside it names no row).
    lookup_bounds: tuple[int, int] | None
    #: URL segment -> lookup value (``ValueError``: no such item), for non-int lookups.
    lookup_convert: Callable[[str], Any] | None
    converter: str
    url_variable: str
    primary_key: tuple[InstrumentedAttribute[Any], ...]
    default_sort: tuple[SortKey, ...]
    #: attribute key -> check of the values its column would refuse
    column_checks: Mapping[str, Check]
    #: attribute key -> what the column would store for a value (decimals rounded)
    column_normalizers: Mapping[str, Callable[[Any], Any]]
    #: attribute key -> column attribute, for every column-backed attribute of the model
    columns: Mapping[str, InstrumentedAttribute[Any]]
    schemas: Mapping[str, ma.Schema] = field(repr=False)
    filter_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    #: sort_fields, plus the columns of default_sort
    sort_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    search_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    primary_key_paths: tuple[FieldPath, ...] = ()
    #: Column attributes whose stored form may differ from what Python holds (rounded
    #: decimals, single-precision floats, date-times a backend truncates or strips of
    #: their zone): read back after a write that sets them.
    stored_form_keys: frozenset[str] = frozenset()
    #: relationship -> the column attributes holding its key, to reload a relationship a
    #: write re-pointed.
    relationship_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: The class's ``permissions`` as one rule (``None``: no permissions).
    permission: Permission | None = None
    #: ``references`` compiled: column -> (resource, the column of its model the foreign
    #: key refers to).
    references: Mapping[str, tuple[type[Any], str]] = field(default_factory=dict)
    #: The bulk writes the collection accepts (``"create"``, ``"patch"``).
    bulk: frozenset[str] = frozenset()
    #: Most items of one bulk write.
    max_bulk_items: int = 100
    #: The key of a bulk PATCH item that names the row it changes (the lookup field's
    #: name in the detail schema).
    bulk_key: str = "id"

    #: ``link_fields`` compiled: schema field -> ``links.LinkField``.
    link_fields: Mapping[str, Any] = field(default_factory=dict)

    #: ``include_fields`` compiled: every path ``?include=`` accepts (prefixes too),
    #: parents before children.
    include_paths: tuple[str, ...] = ()
    #: The list's pieces (filtering, sorting, pagination, the arguments schema) of a
    #: resource with ``ListMixin``; ``None`` for one without.
    list_config: Any = None
    #: The model's columns, when an item read may be read as a row of them rather than
    #: as an object (``RetrieveMixin.compile_retrieve_columns``); ``None`` otherwise.
    retrieve_columns: tuple[Any, ...] | None = None
    #: Whether a delete may be one statement (``DeleteMixin.compile_direct_delete``).
    direct_delete: bool = False
    #: What a create by one ``INSERT ... RETURNING`` needs, when the class allows one
    #: (``CreateMixin.compile_direct_create``); ``None`` otherwise.
    direct_create: Any = None
    #: What a PUT or PATCH by one ``UPDATE ... RETURNING`` needs, when the class allows
    #: one (``UpdateMixin.compile_direct_update``); ``None`` otherwise.
    direct_update: Any = None
    #: (operation, field names) -> the schema trimmed to them, for ``?fields=``
    sparse_schemas: OrderedDict[tuple[str, tuple[str, ...]], ma.Schema] = field(
        default_factory=OrderedDict, repr=False
    )

    def sparse_schema(self, operation: str, names: tuple[str, ...]) -> ma.Schema:
        """The ``operation`` schema trimmed to ``names``, built once and kept while used."""
        key = (operation, names)
        schema = self.sparse_schemas.get(key)
        if schema is None:
            schema = type(self.schemas[operation])(only=names)
            round_half_up(schema)
            self.sparse_schemas[key] = schema
            if len(self.sparse_schemas) > SPARSE_SCHEMAS_KEPT:
                self.sparse_schemas.popitem(last=False)
        else:
            self.sparse_schemas.move_to_end(key)
        return schema

    def conflict_fields(self, exc: BaseException) -> list[str]:
        """The client's names (``data_key``) of the input fields holding the columns of
        the unique constraint ``exc`` broke (a column the server sets, such as the
        parent's key, is not one); none when no input field holds them."""
        table = self.mapper.local_table
        columns = unique_columns(exc, table)
        keys = [
            self.mapper.get_property_by_column(table.columns[name]).key
            for name in columns
            if name in table.columns
        ]
        names: dict[str, None] = {}
        for key in keys:
            for operation in ("create", "update", "patch"):
                for name, loaded in self.schemas[operation].load_fields.items():
                    if (loaded.attribute or name) == key:
                        names[loaded.data_key or name] = None
        return list(names)

    def column(self, key: str) -> InstrumentedAttribute[Any]:
        try:
            return self.columns[key]
        except KeyError:
            raise ImproperlyConfigured(
                f"{self.resource.__name__}: {self.model.__name__} has no column attribute {key!r}."
            ) from None


def _require(cls: type[Any], attribute: str, fix: str) -> Any:
    value = getattr(cls, attribute, None)
    if value is None or value == "":
        raise ImproperlyConfigured(f"{cls.__name__} has no `{attribute}`; {fix}.")
    return value


def _schema_class(cls: type[Any], attribute: str, value: Any) -> type[ma.Schema]:
    if not (isinstance(value, type) and issubclass(value, ma.Schema)):
        raise ImproperlyConfigured(
            f"{cls.__name__}.{attribute} must be a marshmallow Schema class, not {value!r}."
        )
    return value


def _converter(column: sa.ColumnElement[Any]) -> str:
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return "string"
    if python_type is int:
        return "int"
    if python_type is uuid.UUID:
        return "uuid"
    return "string"


_compiled: dict[type[Any], ResourceOptions] = {}


def options_for(cls: type[Any]) -> ResourceOptions:
    """Check ``cls``'s configuration and compile it, once per class."""
    try:
        return _compiled[cls]
    except KeyError:
        options = _compiled[cls] = _compile(cls)
        return options


def _compile(cls: type[Any]) -> ResourceOptions:
    name = _require(cls, "name", 'set it to the URL segment, e.g. name = "teachers"')
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ImproperlyConfigured(
            f"{cls.__name__}.name must be one URL segment of letters, digits, '-' or '_'; "
            f"got {name!r}."
        )
    model = _require(cls, "model", "set it to the SQLAlchemy model class the resource serves")
    try:
        mapper: Mapper[Any] = sa.inspect(model)
    except sa.exc.NoInspectionAvailable:
        raise ImproperlyConfigured(
            f"{cls.__name__}.model must be a mapped SQLAlchemy class, not {model!r}."
        ) from None
    schema_classes = _schema_classes(cls)
    columns, checks, normalizers = _columns(mapper, model)
    primary_key = tuple(
        getattr(model, mapper.get_property_by_column(c).key) for c in mapper.primary_key
    )
    lookup_key = _lookup_key(cls, model, primary_key, columns)
    lookup_column = mapper.column_attrs[lookup_key].columns[0]
    _check_page_sizes(cls)
    default_sort = _default_sort(cls, model, columns)
    list_schema = schema_classes["list"]()
    round_half_up(list_schema)
    sort_paths = compile_paths(cls, mapper, list_schema, "sort_fields")
    defaults = [key.key for key in default_sort if key.key not in sort_paths]
    sort_paths |= compile_paths(cls, mapper, list_schema, "default_sort", defaults)
    pk_keys = [pk.key for pk in primary_key]
    schemas = {op: schema_class() for op, schema_class in schema_classes.items()}
    for schema in schemas.values():
        round_half_up(schema)
    _check_writable(cls, mapper, schemas)
    options = ResourceOptions(
        resource=cls,
        model=model,
        mapper=mapper,
        lookup_key=lookup_key,
        lookup_attr=columns[lookup_key],
        lookup_check=checks.get(lookup_key),
        lookup_bounds=int_bounds(cast(sa.Column[Any], lookup_column)),
        lookup_convert=url_converter(cast(sa.Column[Any], lookup_column)),
        converter=_converter(lookup_column),
        url_variable=cls.url_variable or f"{snake_case(model.__name__)}_id",
        primary_key=primary_key,
        default_sort=default_sort,
        column_checks=checks,
        column_normalizers=normalizers,
        columns=columns,
        schemas=schemas,
        filter_paths=compile_paths(cls, mapper, list_schema, "filter_fields"),
        sort_paths=sort_paths,
        search_paths=compile_paths(cls, mapper, list_schema, "search_fields"),
        primary_key_paths=tuple(compile_paths(cls, mapper, list_schema, "pk", pk_keys).values()),
        permission=_permission(cls),
        **_relations(cls, mapper, schemas) | _bulk(cls, schemas["detail"], lookup_key),
        **_relationship_options(cls, mapper),
    )
    return _compile_actions(cls, options)


#: Option -> the classmethod of an action mixin that compiles it from the others.
ACTION_OPTIONS = {
    "list_config": "compile_list_config",
    "retrieve_columns": "compile_retrieve_columns",
    "direct_delete": "compile_direct_delete",
    "direct_create": "compile_direct_create",
    "direct_update": "compile_direct_update",
}


def _compile_actions(cls: type[Any], options: ResourceOptions) -> ResourceOptions:
    """``options`` with the pieces of the class's actions (:data:`ACTION_OPTIONS`)."""
    for option, method in ACTION_OPTIONS.items():
        compile_option = getattr(cls, method, None)
        if compile_option is not None:
            options = replace(options, **{option: compile_option(options)})
    return options


def foreign_keys(columns: Any, target: Mapper[Any]) -> list[Any]:
    """The foreign keys of ``columns`` that refer to a table of ``target``."""
    return [
        fk
        for column in columns
        for fk in getattr(column, "foreign_keys", ())
        if fk.column.table in target.tables
    ]


def _permission(cls: type[Any]) -> Permission | None:
    try:
        return combine(cls.permissions)
    except TypeError as exc:
        raise ImproperlyConfigured(
            f"{cls.__name__}.permissions must list Permission classes or instances: {exc}"
        ) from None


def _relations(cls: type[Any], mapper: Mapper[Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """``references`` and ``link_fields`` compiled: the rows a body may name."""
    return {
        "references": _references(cls, mapper),
        "link_fields": compile_link_fields(cls, mapper, schemas),
    }


def _references(cls: type[Any], mapper: Mapper[Any]) -> dict[str, tuple[type[Any], str]]:
    targets: dict[str, tuple[type[Any], str]] = {}
    for key, target in dict(cls.references).items():
        resolved = cls if target == "self" else target
        target_model = getattr(resolved, "model", None)
        if not (isinstance(resolved, type) and hasattr(resolved, "get_scoped_query")) or (
            target_model is None
        ):
            raise ImproperlyConfigured(
                f'{cls.__name__}.references[{key!r}] must be a Resource class or "self".'
            )
        target_mapper: Mapper[Any] = sa.inspect(target_model)
        prop = mapper.column_attrs.get(key)
        fks = foreign_keys(prop.columns if prop is not None else [], target_mapper)
        if len(fks) != 1:
            raise ImproperlyConfigured(
                f"{cls.__name__}.references names {key!r}, which is not a foreign key to "
                f"{resolved.__name__}'s table."
            )
        targets[key] = (resolved, target_mapper.get_property_by_column(fks[0].column).key)
    return targets


def _relationship_options(cls: type[Any], mapper: Mapper[Any]) -> dict[str, Any]:
    """What the model's relationships compile to: the keys a write reads back, and the
    ``include_fields`` paths."""
    return {**_read_back_keys(mapper), "include_paths": _include_paths(cls, mapper)}


def _include_paths(cls: type[Any], mapper: Mapper[Any]) -> tuple[str, ...]:
    """``include_fields`` checked (each step a relationship of the model one step up) and
    closed under prefixes, shortest first."""
    names = cls.include_fields
    if isinstance(names, str):
        raise ImproperlyConfigured(
            f"{cls.__name__}.include_fields must be a list of names, not the string {names!r}."
        )
    paths: dict[str, None] = {}
    for path in names:
        current = mapper
        steps = str(path).split(".")
        for depth, step in enumerate(steps):
            relationship = current.relationships.get(step) if step else None
            if relationship is None:
                raise ImproperlyConfigured(
                    f"{cls.__name__}.include_fields names {path!r}, but {step!r} is not a "
                    f"relationship of {current.class_.__name__}."
                )
            paths[".".join(steps[: depth + 1])] = None
            current = relationship.mapper
    return tuple(sorted(paths, key=lambda name: (name.count("."), name)))


#: Write operation -> the action method that serves it and the hook that writes.
_WRITES = {
    "create": ("create", "perform_create"),
    "update": ("update", "perform_update"),
    "patch": ("partial_update", "perform_update"),
}


def _check_writable(cls: type[Any], mapper: Mapper[Any], schemas: Mapping[str, Any]) -> None:
    """Refuse, at registration, an input field the default ``perform_*`` cannot store (it
    would be a 500 at the first write), unless the resource overrides that hook or lists
    the field in ``link_fields`` (which the write unit stores itself)."""
    links = dict(getattr(cls, "link_fields", None) or {})
    for operation, (action, hook) in _WRITES.items():
        method = getattr(cls, hook, None)
        own_hook = not getattr(method, "__module__", "").startswith("resources_kit.")
        if not callable(getattr(cls, action, None)) or own_hook:
            continue
        for name, loaded in schemas[operation].load_fields.items():
            if name in links:
                continue
            problem = unwritable(mapper, loaded, loaded.attribute or name)
            if problem:
                raise ImproperlyConfigured(
                    f"{cls.__name__}: the {operation} schema's field {name!r} cannot be "
                    f"written: {problem}. Make it dump_only, or override {hook}() to write "
                    "it (for a many-to-many list of ids, declare it in link_fields)."
                )


#: What ``bulk`` may name, and the action method each needs.
BULK_WRITES = {"create": "create", "patch": "partial_update"}


def _bulk(cls: type[Any], detail: ma.Schema, lookup_key: str) -> dict[str, Any]:
    """``bulk`` and ``max_bulk_items`` checked: a known write the resource serves, and a
    positive count."""
    name = cls.__name__
    declared = getattr(cls, "bulk", ())
    if isinstance(declared, str) or not isinstance(declared, Sequence | frozenset | set):
        raise ImproperlyConfigured(
            f'{name}.bulk must be a tuple of bulk writes, e.g. ("create", "patch"), not '
            f"{declared!r}."
        )
    for write in declared:
        if write == "delete":
            raise ImproperlyConfigured(
                f"{name}.bulk names 'delete', which is not a bulk write: a DELETE carries no "
                "body; delete the rows one by one, or with a collection @action."
            )
        if write not in BULK_WRITES:
            raise ImproperlyConfigured(
                f"{name}.bulk names {write!r}; a bulk write is 'create' or 'patch'."
            )
        if not callable(getattr(cls, BULK_WRITES[write], None)):
            mixin = "CreateMixin" if write == "create" else "PatchMixin"
            raise ImproperlyConfigured(
                f"{name}.bulk names {write!r}, but {name} has no {BULK_WRITES[write]}() "
                f"action; add {mixin}, or remove {write!r} from bulk."
            )
    if "patch" in declared and getattr(cls, "require_if_match", False):
        raise ImproperlyConfigured(
            f"{name}.bulk names 'patch', but {name}.require_if_match is set and a bulk PATCH "
            "takes no If-Match (one ETag names one item); remove 'patch' from bulk."
        )
    own = _own_hooks(cls)
    if "patch" in declared and "get_object" in own:
        raise ImproperlyConfigured(
            f"{name}.bulk names 'patch', but {name} overrides get_object(), which a bulk "
            "PATCH does not call (it finds its rows with the row policy); narrow the rows "
            "in get_query() instead, or remove 'patch' from bulk."
        )
    if declared and "get_request_data" in own and "get_item_data" not in own:
        raise ImproperlyConfigured(
            f"{name} overrides get_request_data() and allows bulk writes, whose items are "
            "loaded with get_item_data(); override get_item_data() too (get_request_data() "
            "may call it), so that every item is loaded the same way."
        )
    most = getattr(cls, "max_bulk_items", 100)
    if not isinstance(most, int) or isinstance(most, bool) or most < 1:
        raise ImproperlyConfigured(
            f"{name}.max_bulk_items must be a positive integer, not {most!r}."
        )
    key = lookup_key
    for field_name, dumped in detail.fields.items():
        if (dumped.attribute or field_name) == lookup_key:
            key = dumped.data_key or field_name
            break
    return {"bulk": frozenset(declared), "max_bulk_items": most, "bulk_key": key}


def _own_hooks(cls: type[Any]) -> set[str]:
    """The write hooks a class (or a base of its own, not the library's) defines."""
    return {
        hook
        for hook in ("get_request_data", "get_item_data", "get_object")
        if not getattr(getattr(cls, hook, None), "__module__", "resources_kit.").startswith(
            "resources_kit."
        )
    }


def _read_back_keys(mapper: Mapper[Any]) -> dict[str, Any]:
    return {
        "stored_form_keys": frozenset(
            prop.key
            for prop in mapper.column_attrs
            if isinstance(prop.columns[0].type, _STORED_DIFFERENTLY)
            and not isinstance(prop.columns[0].type, sa.Integer)
        ),
        "relationship_keys": {
            rel.key: frozenset(mapper.get_property_by_column(c).key for c in rel.local_columns)
            for rel in mapper.relationships
            if all(c in mapper.columns.values() for c in rel.local_columns)
        },
    }


#: Column types whose values a backend may store in another form than Python sent.
_STORED_DIFFERENTLY = (sa.Numeric, sa.DateTime, sa.Time, sa.Interval)


def _columns(
    mapper: Mapper[Any], model: type[Any]
) -> tuple[
    dict[str, InstrumentedAttribute[Any]], dict[str, Check], dict[str, Callable[[Any], Any]]
]:
    """Every column attribute, with the check and the normalizer of its column."""
    columns: dict[str, InstrumentedAttribute[Any]] = {}
    checks: dict[str, Check] = {}
    normalizers: dict[str, Callable[[Any], Any]] = {}
    for prop in mapper.column_attrs:
        columns[prop.key] = getattr(model, prop.key)
        if len(prop.columns) == 1 and isinstance(prop.columns[0], sa.Column):
            check = column_check(prop.columns[0])
            if check is not None:
                checks[prop.key] = check
            normalizer = column_normalizer(prop.columns[0])
            if normalizer is not None:
                normalizers[prop.key] = normalizer
    return columns, checks, normalizers


def _schema_classes(cls: type[Any]) -> dict[str, type[ma.Schema]]:
    schema = _schema_class(
        cls, "schema", _require(cls, "schema", "set it to a marshmallow Schema class")
    )
    schema_classes = {
        "list": schema,
        "detail": getattr(cls, "detail_schema", None) or schema,
        "create": getattr(cls, "create_schema", None) or schema,
        "update": getattr(cls, "update_schema", None) or schema,
    }
    schema_classes["patch"] = getattr(cls, "patch_schema", None) or schema_classes["update"]
    for operation, value in schema_classes.items():
        _schema_class(cls, f"{operation}_schema" if value is not schema else "schema", value)
    for extra in extra_actions(cls):
        if extra.schema is not None:
            schema_classes[extra.name] = _schema_class(cls, f"{extra.name} schema", extra.schema)
    return schema_classes


def _lookup_key(
    cls: type[Any],
    model: type[Any],
    primary_key: tuple[InstrumentedAttribute[Any], ...],
    columns: Mapping[str, Any],
) -> str:
    lookup_key: str = cls.lookup_field or primary_key[0].key
    if len(primary_key) != 1 and cls.lookup_field is None:
        raise ImproperlyConfigured(
            f"{cls.__name__}: {model.__name__} has a composite primary key; "
            "set `lookup_field` to a unique column."
        )
    if lookup_key not in columns:
        raise ImproperlyConfigured(
            f"{cls.__name__}.lookup_field {lookup_key!r} is not a column attribute of "
            f"{model.__name__}."
        )
    return lookup_key


def _check_page_sizes(cls: type[Any]) -> None:
    page_size, max_page_size = cls.page_size, cls.max_page_size
    if not (isinstance(page_size, int) and isinstance(max_page_size, int)) or not (
        1 <= page_size <= max_page_size
    ):
        raise ImproperlyConfigured(
            f"{cls.__name__}: need 1 <= page_size <= max_page_size, got {page_size!r} and "
            f"{max_page_size!r}."
        )


def _default_sort(
    cls: type[Any], model: type[Any], columns: Mapping[str, Any]
) -> tuple[SortKey, ...]:
    try:
        default_sort = tuple(split_sort(cls.default_sort)) if cls.default_sort else ()
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{cls.__name__}.default_sort has a malformed term {exc.args[0]!r}; "
            'write "column" or "column__desc".'
        ) from None
    for key in default_sort:
        if key.key not in columns:
            raise ImproperlyConfigured(
                f"{cls.__name__}.default_sort names {key.key!r}, which is not a column of "
                f"{model.__name__}."
            )
    return default_sort
