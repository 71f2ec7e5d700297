"""Every route of the API router, found by walking it, with what the OpenAPI schema says about
its query parameters and request body. A new viewset or @action is in here with nobody listing
it; the tests in this folder parametrize over :func:`routes`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from drf_spectacular.generators import SchemaGenerator

from llmhub.api.urls import router

API_PREFIX = "/api/v1/"
PK_GROUP = re.compile(r"\(\?P<pk>[^)]*\)")


@dataclass(frozen=True)
class Route:
    template: str  # "/api/v1/projects/{id}/cancel/"
    method: str  # "GET", "POST" ...
    action: str  # the viewset action: "list", "cancel" ...
    view: type  # the viewset class
    basename: str
    detail: bool
    query_params: tuple[tuple[str, str], ...] = ()  # (name, schema type)
    body_schema: dict | None = field(default=None, compare=False, hash=False)

    @property
    def id(self) -> str:
        return f"{self.method} {self.template.removeprefix(API_PREFIX)}"

    def url(self, pk: Any = None) -> str:
        return self.template.replace("{id}", str(pk)) if self.detail else self.template

    @property
    def model(self) -> type:
        """The model of the viewset's queryset (from its selector)."""
        from django.contrib.auth.models import AnonymousUser

        return self.view().scoped_queryset(AnonymousUser()).model

    @property
    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")


@cache
def _schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _resolve(schema: dict, node: Any) -> Any:
    """Inline every ``$ref`` of ``node`` (the components are small and not recursive)."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _resolve(schema, schema["components"]["schemas"][name])
        return {key: _resolve(schema, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(schema, item) for item in node]
    return node


@cache
def routes() -> tuple[Route, ...]:
    """Every (URL, method) the router serves, in a stable order."""
    schema = _schema()
    found = []
    for pattern in router.urls:
        callback = pattern.callback
        actions = getattr(callback, "actions", None)
        regex = str(pattern.pattern)
        if not actions or "(?P<format>" in regex:
            continue  # the API root and the format-suffix twins of each route
        path = PK_GROUP.sub("{id}", regex.lstrip("^").rstrip("$"))
        template = API_PREFIX + path
        operations = schema["paths"].get(template, {})
        for method, action in actions.items():
            if method in ("head", "options"):
                continue
            operation = operations.get(method, {})
            params = tuple(
                (p["name"], p.get("schema", {}).get("type", "string"))
                for p in operation.get("parameters", [])
                if p["in"] == "query"
            )
            body = operation.get("requestBody", {}).get("content", {})
            body_schema = body.get("application/json", {}).get("schema")
            found.append(
                Route(
                    template=template,
                    method=method.upper(),
                    action=action,
                    view=callback.cls,
                    basename=callback.initkwargs.get("basename", ""),
                    detail=bool(callback.initkwargs.get("detail")),
                    query_params=params,
                    body_schema=_resolve(schema, body_schema) if body_schema else None,
                )
            )
    return tuple(sorted(found, key=lambda r: (r.template, r.method)))


def routes_where(**conditions: Any) -> list[Route]:
    return [r for r in routes() if all(getattr(r, k) == v for k, v in conditions.items())]


def integer_paths(schema: dict | None, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Every integer property of a request body schema, as (dotted path, key path), looking into
    nested objects and the first item of arrays of objects."""
    if not schema:
        return []
    found = []
    for name, prop in schema.get("properties", {}).items():
        if prop.get("readOnly"):
            continue
        path = f"{prefix}{name}"
        if prop.get("type") == "integer":
            found.append((path, [name]))
        elif prop.get("type") == "object" and prop.get("properties"):
            found += [(p, [name, *k]) for p, k in integer_paths(prop, f"{path}.")]
        elif prop.get("type") == "array" and prop.get("items", {}).get("properties"):
            found += [(p, [name, 0, *k]) for p, k in integer_paths(prop["items"], f"{path}[0].")]
    return found


def number_fields(schema: dict | None) -> list[str]:
    """Top-level float properties of a request body schema."""
    if not schema:
        return []
    return [
        name
        for name, prop in schema.get("properties", {}).items()
        if prop.get("type") == "number" and not prop.get("readOnly")
    ]
