"""The base viewset: reads are scoped once, writes go through services.

Subclasses name a selector (``scoped_queryset``) and the service calls for create, update and
delete. There is no ``objects.all()`` to forget: ``get_queryset`` always starts from the
selector, so another team's id is a 404 on every route.

Each viewset also declares what its routes need from the role table (``read_action`` for
reads, ``required_actions`` for everything else, with values from ``projects.permissions.Action``
and ``None`` where no team role is involved); ``projects.api.permissions.RoleActionPermission``
enforces it. Detail routes fetch and check their object before the view body runs, so a refused
role gets its 403 (and an outsider its 404) before the request body is validated.
"""

from __future__ import annotations

from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response


class ScopedViewSet(viewsets.GenericViewSet):
    # PUT is left out on purpose: partial updates (PATCH) are the one way to change an object.
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    create_serializer_class: type[serializers.Serializer] | None = None
    update_serializer_class: type[serializers.Serializer] | None = None
    # What reading needs (None: the team's work, Action.VIEW_WORK); must match the selector.
    read_action: str | None = None
    # Action name (or "name.method") -> the Action it needs; every write must be declared.
    required_actions: dict[str, str | None] = {}

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if self.detail and self.action not in (None, "metadata"):
            # 404 for what the user cannot see, 403 for what the role may not do: both before
            # the view reads or validates the request body.
            self._checked_object = self.get_object()

    def get_object(self):
        # The object fetched (and permission-checked) in initial() serves the view's first call;
        # later calls read again, so a view re-reading after a change sees the change.
        checked = self.__dict__.pop("_checked_object", None)
        return checked if checked is not None else super().get_object()

    def scoped_queryset(self, user):
        raise NotImplementedError

    def get_queryset(self):
        return self.scoped_queryset(self.request.user)

    # Hooks calling services; a viewset that does not define one does not offer the action.
    def perform_service_create(self, data: dict):
        raise NotImplementedError

    def perform_service_update(self, instance, data: dict):
        raise NotImplementedError

    def perform_service_destroy(self, instance) -> None:
        raise NotImplementedError

    def _validated(self, serializer_class, data, *, partial: bool = False) -> dict:
        serializer = serializer_class(
            data=data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def respond(self, instance, *, status_code: int = status.HTTP_200_OK) -> Response:
        # Re-read through the selector so the response carries the same annotations as a GET.
        instance = self.get_queryset().get(pk=instance.pk)
        return Response(self.get_serializer(instance).data, status=status_code)


class ListRetrieveMixin:
    def list(self, request: Request, *args, **kwargs) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(page if page is not None else queryset, many=True)
        if page is not None:
            return self.get_paginated_response(serializer.data)
        return Response(serializer.data)

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self.get_serializer(self.get_object()).data)


class CreateMixin:
    def create(self, request: Request, *args, **kwargs) -> Response:
        data = self._validated(self.create_serializer_class, request.data)
        instance = self.perform_service_create(data)
        return self.respond(instance, status_code=status.HTTP_201_CREATED)


class UpdateMixin:
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        instance = self.get_object()
        data = self._validated(self.update_serializer_class, request.data, partial=True)
        if not data:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give at least one field to change."]}
            )
        instance = self.perform_service_update(instance, data)
        return self.respond(instance)


class DestroyMixin:
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        self.perform_service_destroy(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
