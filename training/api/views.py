"""REST endpoints of the training stage: jobs (launch, cancel, resume, curves, metrics,
external runs), sweeps, and the model registry."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet, UpdateMixin
from llmhub.services import job_cancel
from projects.permissions import Action
from training import metrics_store, selectors, services
from training.api import filters
from training.api import serializers as s
from training.downloads import model_download_response


@extend_schema_view(
    create=extend_schema(
        request=s.TrainingLaunchSerializer, responses={201: s.TrainingJobSerializer}
    ),
)
class TrainingJobViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Training jobs: launch on the gpu queue, follow curves live, cancel, resume; or track an
    external run whose script posts metrics."""

    serializer_class = s.TrainingJobSerializer
    required_actions = {
        "create": Action.RUN_JOBS,
        "cancel": Action.RUN_JOBS,
        "resume": Action.RUN_JOBS,
        "metrics": Action.RUN_JOBS,
        "finish": Action.RUN_JOBS,
        "external": Action.RUN_JOBS,
        "estimate": Action.VIEW_WORK,  # a computation on the body, no team involved
    }
    create_serializer_class = s.TrainingLaunchSerializer
    filterset_class = filters.TrainingJobFilterSet
    search_fields = ("name",)
    ordering_fields = ("created_at", "finished_at")

    def scoped_queryset(self, user):
        return selectors.training_jobs_for_user(user)

    def perform_service_create(self, data):
        return services.training_job_launch(actor=self.request.user, **data)

    @extend_schema(request=None, responses=s.TrainingJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Stop the job within seconds; it keeps its last checkpoint."""
        return self.respond(job_cancel(actor=request.user, job=self.get_object()))

    @extend_schema(request=None, responses={201: s.TrainingJobSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        """Queue a new job continuing this failed or cancelled one from its last checkpoint."""
        job = services.training_job_resume(actor=request.user, job=self.get_object())
        return self.respond(job, status_code=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "names", str, description="Comma-separated metric names; all when left out."
            ),
            OpenApiParameter("max_points", int),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["get"])
    def curves(self, request: Request, pk=None) -> Response:
        """Metric curves for charts, each downsampled to at most 2,000 points (extremes kept)."""
        job = self.get_object()
        names_param = request.query_params.get("names")
        names = (
            names_param.split(",") if names_param else metrics_store.metric_names([job.pk])[job.pk]
        )
        try:
            max_points = min(max(int(request.query_params.get("max_points", 2000)), 10), 2000)
        except ValueError:
            raise ValidationError({"max_points": ["Must be an integer."]}) from None
        return Response(
            {
                "job": job.pk,
                "status": job.status,
                "progress": job.progress,
                "global_step": job.global_step,
                "curves": {
                    name: metrics_store.curve(job.pk, name, max_points=max_points) for name in names
                },
            }
        )

    @extend_schema(request=s.MetricBatchSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["post"])
    def metrics(self, request: Request, pk=None) -> Response:
        """Add a batch of metric points to a running job (external scripts use this)."""
        data = self._validated(s.MetricBatchSerializer, request.data)
        stored = services.metrics_ingest(
            actor=request.user, job=self.get_object(), points=data["points"]
        )
        return Response({"stored": stored}, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.FinishSerializer, responses=s.TrainingJobSerializer)
    @action(detail=True, methods=["post"])
    def finish(self, request: Request, pk=None) -> Response:
        """Mark an external run finished."""
        data = self._validated(s.FinishSerializer, request.data)
        return self.respond(
            services.external_run_finish(actor=request.user, job=self.get_object(), **data)
        )

    @extend_schema(request=s.ExternalRunSerializer, responses={201: s.TrainingJobSerializer})
    @action(detail=False, methods=["post"])
    def external(self, request: Request) -> Response:
        """Start tracking a run that trains outside LLMHub."""
        data = self._validated(s.ExternalRunSerializer, request.data)
        job = services.external_run_start(actor=request.user, **data)
        return self.respond(job, status_code=status.HTTP_201_CREATED)

    @extend_schema(request=s.EstimateSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["post"])
    def estimate(self, request: Request) -> Response:
        """Parameters, training memory and FLOPs per token of a model spec, before launch."""
        data = self._validated(s.EstimateSerializer, request.data)
        given = data["hyperparameters"] if isinstance(data["hyperparameters"], dict) else None
        hyperparameters = given
        if given is not None:
            # The body's own fields unless the hyperparameters say otherwise.
            hyperparameters = {
                "max_seq_length": data["max_seq_length"],
                "batch_size": data["batch_size"],
                "precision": data["precision"],
                **given,
            }
        return Response(
            services.estimate_for(
                model_spec=data["model_spec"],
                hyperparameters=hyperparameters,
                method=data["method"],
                kind=data.get("kind"),
                tokenizer=data.get("tokenizer"),
                train_version=data.get("train_version"),
            )
        )

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def presets(self, request: Request) -> Response:
        """Architecture families and sizes for random-weight models, and the hyperparameters."""
        from training.runtime.config import hyperparameter_schema
        from training.runtime.presets import preset_catalog

        return Response({"presets": preset_catalog(), "hyperparameters": hyperparameter_schema()})

    @extend_schema(responses=s.CheckpointSerializer(many=True))
    @action(detail=True, methods=["get"])
    def checkpoints(self, request: Request, pk=None) -> Response:
        job = self.get_object()
        return Response(s.CheckpointSerializer(job.checkpoints.all(), many=True).data)


@extend_schema_view(
    create=extend_schema(request=s.SweepCreateSerializer, responses={201: s.SweepSerializer}),
)
class SweepViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Hyperparameter sweeps: child jobs over a grid or random search, ranked by a metric."""

    serializer_class = s.SweepSerializer
    required_actions = {"create": Action.RUN_JOBS}
    create_serializer_class = s.SweepCreateSerializer
    filterset_class = filters.SweepFilterSet

    def scoped_queryset(self, user):
        return selectors.sweeps_for_user(user)

    def perform_service_create(self, data):
        base = dict(data.pop("base"))
        if base.pop("project") != data["project"]:
            raise ValidationError({"base": ["The base request must be for the same project."]})
        base.pop("name", None)
        return services.sweep_launch(actor=self.request.user, base=base, **data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def ranking(self, request: Request, pk=None) -> Response:
        """The trials, best first, with their hyperparameters and final metrics."""
        sweep = self.get_object()
        trials = selectors.sweep_ranking(sweep)
        return Response(
            {
                "metric": sweep.metric,
                "direction": sweep.direction,
                "best": trials[0].pk
                if trials and sweep.metric in trials[0].final_metrics
                else None,
                "trials": [
                    {
                        "job": t.pk,
                        "name": t.name,
                        "status": t.status,
                        "hyperparameters": t.hyperparameters,
                        "final_metrics": t.final_metrics,
                        # Set on the one trial registered (the best, once all have ended).
                        "model_version": t.model_version_id,
                    }
                    for t in trials
                ],
            }
        )


class RegisteredModelViewSet(ListRetrieveMixin, ScopedViewSet):
    """Registered models of your projects."""

    serializer_class = s.RegisteredModelSerializer
    filterset_class = filters.RegisteredModelFilterSet

    def scoped_queryset(self, user):
        return selectors.registered_models_for_user(user)


class ModelVersionViewSet(ListRetrieveMixin, UpdateMixin, ScopedViewSet):
    """Model versions with their lineage (dataset version -> job -> model) and stage; PATCH
    changes their tags and description; ``download`` streams their files as a zip."""

    serializer_class = s.ModelVersionSerializer
    required_actions = {"stage": Action.EDIT_PROJECT, "partial_update": Action.EDIT_PROJECT}
    update_serializer_class = s.ModelVersionUpdateSerializer
    filterset_class = filters.ModelVersionFilterSet

    def scoped_queryset(self, user):
        return selectors.model_versions_for_user(user)

    def perform_service_update(self, instance, data):
        return services.model_version_update(actor=self.request.user, version=instance, **data)

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk=None) -> StreamingHttpResponse:
        """The version's model files (config, weights, tokenizer) as one zip, streamed."""
        return model_download_response(self.get_object())

    @extend_schema(request=s.StageSerializer, responses=s.ModelVersionSerializer)
    @action(detail=True, methods=["post"])
    def stage(self, request: Request, pk=None) -> Response:
        """Move the version to candidate, staging, production (archives the previous) or
        archived."""
        data = self._validated(s.StageSerializer, request.data)
        return self.respond(
            services.model_version_set_stage(
                actor=request.user,
                version=self.get_object(),
                stage=data["stage"],
                reason=data["reason"],
            )
        )

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def lineage(self, request: Request, pk=None) -> Response:
        """Where this model came from: dataset versions, job, tokenizer and base model."""
        return Response(selectors.lineage_of(self.get_object()))
