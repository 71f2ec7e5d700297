"""REST endpoints of the data stage."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from datasets_app import selectors, services
from datasets_app.api import filters
from datasets_app.api import serializers as s
from datasets_app.cleaning.browse import (
    MAX_PAGE,
    OPERATORS,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    RowQuery,
)
from datasets_app.cleaning.diff import EXAMPLES_DEFAULT, EXAMPLES_MAX
from datasets_app.cleaning.options import OptionError
from datasets_app.preview import browse_rows, read_rows
from datasets_app.uploads import SizeLimitedUploadMixin, UploadParser
from llmhub.api.params import query_id, query_int
from llmhub.api.parsers import SafeJSONParser
from llmhub.api.viewsets import (
    CreateMixin,
    DestroyMixin,
    ListRetrieveMixin,
    ScopedViewSet,
    UpdateMixin,
)
from llmhub.services import job_cancel
from projects.permissions import Action


def _accepted(job) -> Response:
    return Response(s.DataJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    create=extend_schema(request=s.DatasetCreateSerializer, responses={201: s.DatasetSerializer}),
    partial_update=extend_schema(request=s.DatasetUpdateSerializer, responses=s.DatasetSerializer),
)
class DatasetViewSet(
    SizeLimitedUploadMixin, ListRetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, ScopedViewSet
):
    """Datasets of your projects, each with its data card; upload files to add versions."""

    serializer_class = s.DatasetSerializer
    create_serializer_class = s.DatasetCreateSerializer
    update_serializer_class = s.DatasetUpdateSerializer
    filterset_class = filters.DatasetFilterSet
    search_fields = ("name", "description")
    parser_classes = (SafeJSONParser, MultiPartParser, FormParser)
    required_actions = {
        "create": Action.EDIT_DATA,
        "partial_update": Action.EDIT_DATA,
        "destroy": Action.EDIT_PROJECT,
        "upload": Action.EDIT_DATA,
        "card.patch": Action.EDIT_DATA,
    }

    def scoped_queryset(self, user):
        return selectors.datasets_for_user(user)

    def perform_service_create(self, data):
        return services.dataset_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.dataset_update(actor=self.request.user, dataset=instance, **data)

    def perform_service_destroy(self, instance):
        services.dataset_delete(actor=self.request.user, dataset=instance)

    @extend_schema(
        request={"multipart/form-data": s.UploadSerializer}, responses={202: s.DataJobSerializer}
    )
    @action(detail=True, methods=["post"], parser_classes=[UploadParser])
    def upload(self, request: Request, pk=None) -> Response:
        """Upload a CSV, TSV, JSON, JSONL, TXT or Parquet file (optionally gzipped); it is
        ingested into a new version by a background job (202 with the job)."""
        dataset = self.get_object()
        self.refuse_oversized_upload(request)
        data = self._validated(s.UploadSerializer, request.data)
        job = services.upload_start(
            actor=request.user,
            dataset=dataset,
            uploaded_file=data.pop("file"),
            column_roles=services.parse_json_field(
                data.pop("column_roles", None), field="column_roles"
            ),
            **data,
        )
        return _accepted(job)

    @extend_schema(methods=["get"], responses=s.DataCardSerializer)
    @extend_schema(
        methods=["patch"], request=s.DataCardUpdateSerializer, responses=s.DataCardSerializer
    )
    @action(detail=True, methods=["get", "patch"])
    def card(self, request: Request, pk=None) -> Response:
        """The data card: source, license, collection, consent, personal data, use, limits."""
        dataset = self.get_object()
        if request.method == "PATCH":
            data = self._validated(s.DataCardUpdateSerializer, request.data, partial=True)
            services.data_card_update(actor=request.user, dataset=dataset, **data)
            dataset = self.get_object()
        return Response(s.DataCardSerializer(dataset.card).data)


class VersionViewSet(ListRetrieveMixin, ScopedViewSet):
    """Immutable dataset versions: lineage, schema, roles, splits; download, preview, profile,
    and the operations that make new versions (clean, split, remap roles)."""

    serializer_class = s.VersionSerializer
    required_actions = {
        "run_profile": Action.EDIT_DATA,
        "clean": Action.EDIT_DATA,
        "split": Action.EDIT_DATA,
        "roles": Action.EDIT_DATA,
    }
    filterset_class = filters.VersionFilterSet

    def scoped_queryset(self, user):
        return selectors.versions_for_user(user)

    @extend_schema(
        parameters=[OpenApiParameter("split", str, description="Download one split only.")],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk=None) -> FileResponse:
        """The version's table as Parquet (or one split of it)."""
        version = self.get_object()
        name, suffix = version.file, ""
        if split_name := request.query_params.get("split"):
            split = version.splits.filter(name=split_name).first()
            if split is None:
                raise ValidationError({"split": [f"No split named '{split_name}'."]})
            name, suffix = split.file, f"-{split.name}"
        filename = f"{version.dataset.name}-v{version.number}{suffix}.parquet"
        return FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=filename)

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="Page number, from 1."),
            OpenApiParameter("page_size", int, description="Rows per page (1-200, default 50)."),
            OpenApiParameter("search", str, description="Keep rows whose text contains this."),
            OpenApiParameter("column", str, description="Filter on this column..."),
            OpenApiParameter("op", str, enum=list(OPERATORS), description="...with this op..."),
            OpenApiParameter("value", str, description="...against this value."),
            OpenApiParameter("offset", int, description="Without page: the first row."),
            OpenApiParameter("limit", int, description="Without page: how many rows (1-200)."),
            OpenApiParameter("split", str),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["get"])
    def rows(self, request: Request, pk=None) -> Response:
        """A page of rows: ``?page=&page_size=``, a case-insensitive ``?search=`` over the
        text columns, a filter ``?column=&op=&value=`` (op: equals, contains, gte, lte);
        ``matched`` counts the rows kept. Plain ``?offset=&limit=`` previews still work."""
        version = self.get_object()
        name = version.file
        if split_name := request.query_params.get("split"):
            split = version.splits.filter(name=split_name).first()
            if split is None:
                raise ValidationError({"split": [f"No split named '{split_name}'."]})
            name = split.file
        browsing = ("page", "page_size", "search", "column", "op", "value")
        if not any(request.query_params.get(key) for key in browsing):
            offset = query_int(request, "offset", default=0)
            limit = query_int(request, "limit", default=20, min_value=1, max_value=PAGE_SIZE_MAX)
            return Response(read_rows(name, offset=offset, limit=limit))
        try:
            query = RowQuery(
                page=query_int(request, "page", default=1, min_value=1, max_value=MAX_PAGE),
                page_size=query_int(
                    request,
                    "page_size",
                    default=PAGE_SIZE_DEFAULT,
                    min_value=1,
                    max_value=PAGE_SIZE_MAX,
                ),
                search=request.query_params.get("search", ""),
                column=request.query_params.get("column"),
                op=request.query_params.get("op", "equals"),
                value=request.query_params.get("value"),
            )
            return Response(browse_rows(name, query))
        except OptionError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None

    @extend_schema(
        parameters=[
            OpenApiParameter("other", int, required=True, description="The version to compare."),
            OpenApiParameter("key", str, description="Match rows by this column (unique)."),
            OpenApiParameter("limit", int, description="Examples of each kind (1-100)."),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request: Request, pk=None) -> Response:
        """What changed from this version to ``?other=``: columns added, removed or retyped;
        rows added, removed and changed (matched by ``?key=`` when given, else by content),
        with a page of examples of each."""
        version = self.get_object()
        other_id = query_id(request, "other", required=True)
        other = self.get_queryset().filter(pk=other_id).first()
        if other is None:
            raise ValidationError({"other": [f"No version {other_id} among those you can see."]})
        limit = query_int(
            request, "limit", default=EXAMPLES_DEFAULT, min_value=1, max_value=EXAMPLES_MAX
        )
        data = selectors.version_diff(
            version, other, key=request.query_params.get("key") or None, limit=limit
        )
        return Response(data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def profile(self, request: Request, pk=None) -> Response:
        """The latest profile of the version (404 until a profile job has succeeded)."""
        version = self.get_object()
        job = selectors.latest_profile(version)
        if job is None:
            return Response(
                {"error": {"code": "not_found", "message": "This version has no profile yet."}},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response({"job": job.pk, "profile": job.result})

    @extend_schema(request=s.ProfileRequestSerializer, responses={202: s.DataJobSerializer})
    @action(detail=True, methods=["post"], url_path="profile/run")
    def run_profile(self, request: Request, pk=None) -> Response:
        """Profile the version again (optionally counting tokens with a tokenizer)."""
        data = self._validated(s.ProfileRequestSerializer, request.data)
        return _accepted(
            services.profile_launch(actor=request.user, version=self.get_object(), **data)
        )

    @extend_schema(request=s.CleanSerializer, responses={202: s.DataJobSerializer})
    @action(detail=True, methods=["post"])
    def clean(self, request: Request, pk=None) -> Response:
        """Run a saved recipe (or ad-hoc steps); the job writes a new version and a report."""
        data = self._validated(s.CleanSerializer, request.data)
        return _accepted(
            services.clean_launch(actor=request.user, version=self.get_object(), **data)
        )

    @extend_schema(request=s.SplitRequestSerializer, responses={202: s.DataJobSerializer})
    @action(detail=True, methods=["post"])
    def split(self, request: Request, pk=None) -> Response:
        """Split into named parts by ratios (optionally stratified) or by a column."""
        data = self._validated(s.SplitRequestSerializer, request.data)
        return _accepted(
            services.split_launch(actor=request.user, version=self.get_object(), **data)
        )

    @extend_schema(request=s.RolesSerializer, responses={201: s.VersionSerializer})
    @action(detail=True, methods=["post"])
    def roles(self, request: Request, pk=None) -> Response:
        """A new version with other column roles (the table is shared, not copied)."""
        data = self._validated(s.RolesSerializer, request.data)
        version = services.version_remap_roles(
            actor=request.user, version=self.get_object(), **data
        )
        return self.respond(version, status_code=status.HTTP_201_CREATED)


@extend_schema_view(
    create=extend_schema(request=s.RecipeCreateSerializer, responses={201: s.RecipeSerializer}),
    partial_update=extend_schema(request=s.RecipeUpdateSerializer, responses=s.RecipeSerializer),
)
class RecipeViewSet(ListRetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, ScopedViewSet):
    """Saved cleaning recipes: ordered steps with parameters (see /recipes/steps/)."""

    serializer_class = s.RecipeSerializer
    required_actions = {
        "create": Action.EDIT_DATA,
        "partial_update": Action.EDIT_DATA,
        "destroy": Action.EDIT_DATA,
    }
    create_serializer_class = s.RecipeCreateSerializer
    update_serializer_class = s.RecipeUpdateSerializer
    filterset_class = filters.RecipeFilterSet

    def scoped_queryset(self, user):
        return selectors.recipes_for_user(user)

    def perform_service_create(self, data):
        return services.recipe_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.recipe_update(actor=self.request.user, recipe=instance, **data)

    def perform_service_destroy(self, instance):
        services.recipe_delete(actor=self.request.user, recipe=instance)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def steps(self, request: Request) -> Response:
        """Every cleaning step with its parameters, defaults and the default recipe."""
        from datasets_app.cleaning.recipe import step_catalog

        return Response(step_catalog())


@extend_schema_view(
    create=extend_schema(request=s.TokenizerCreateSerializer, responses={202: s.DataJobSerializer}),
)
class TokenizerViewSet(ListRetrieveMixin, ScopedViewSet):
    """Tokenizers trained on dataset versions; POST trains a new one in a background job."""

    serializer_class = s.TokenizerSerializer
    create_serializer_class = s.TokenizerCreateSerializer
    required_actions = {"create": Action.EDIT_DATA}
    filterset_class = filters.TokenizerFilterSet

    def scoped_queryset(self, user):
        return selectors.tokenizers_for_user(user)

    def create(self, request: Request) -> Response:
        data = self._validated(s.TokenizerCreateSerializer, request.data)
        return _accepted(services.tokenizer_launch(actor=request.user, **data))


class DataJobViewSet(ListRetrieveMixin, ScopedViewSet):
    """Data jobs (ingest, profile, clean, split, tokenizer) with status and results."""

    serializer_class = s.DataJobSerializer
    required_actions = {"cancel": Action.RUN_JOBS}
    filterset_class = filters.DataJobFilterSet

    def scoped_queryset(self, user):
        return selectors.data_jobs_for_user(user)

    @extend_schema(request=None, responses=s.DataJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(job_cancel(actor=request.user, job=self.get_object()))
