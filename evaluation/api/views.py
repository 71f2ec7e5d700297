"""REST endpoints of the evaluation stage: runs, per-example outputs, comparisons, goal
progress and bias reports."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation import selectors, services
from evaluation.api import serializers as s
from evaluation.models import BiasKind
from llmhub.api.params import query_id, query_ids
from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet
from llmhub.services import job_cancel
from projects.permissions import Action
from projects.selectors import get_project_for_user


def _ids(request: Request, name: str) -> list[int]:
    return query_ids(request, name)  # bounded ids, a 400 naming the parameter


@extend_schema_view(
    create=extend_schema(
        request=s.EvaluationLaunchSerializer, responses={201: s.EvaluationRunSerializer}
    ),
)
class EvaluationRunViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Evaluation runs: a model version x a dataset split x metrics, with 95% intervals."""

    serializer_class = s.EvaluationRunSerializer
    required_actions = {"create": Action.RUN_JOBS, "cancel": Action.RUN_JOBS}
    create_serializer_class = s.EvaluationLaunchSerializer
    filterset_fields = ("project", "status", "model_version", "dataset_version", "split")
    ordering_fields = ("created_at", "finished_at")

    def scoped_queryset(self, user):
        return selectors.evaluation_runs_for_user(user)

    def perform_service_create(self, data):
        return services.evaluation_launch(actor=self.request.user, **data)

    @extend_schema(request=None, responses=s.EvaluationRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(job_cancel(actor=request.user, job=self.get_object()))

    @extend_schema(
        parameters=[
            OpenApiParameter("search", str),
            OpenApiParameter(
                "order", str, enum=["index", "score", "-score"], description="score: worst first"
            ),
        ],
        responses=s.ExampleSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def examples(self, request: Request, pk=None) -> Response:
        """Per-example inputs, references, predictions and scores (paginated)."""
        order = request.query_params.get("order", "index")
        if order not in ("index", "score", "-score"):
            raise ValidationError({"order": ["Use index, score or -score."]})
        examples = selectors.examples_of(
            self.get_object(), search=request.query_params.get("search", ""), order=order
        )
        page = self.paginate_queryset(examples)
        return self.get_paginated_response(s.ExampleSerializer(page, many=True).data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def confusion(self, request: Request, pk=None) -> Response:
        """A classification run's confusion matrix (counts and normalised per true class),
        per-class precision, recall, F1 and support, and the most confused pairs."""
        data = selectors.confusion_of(self.get_object())
        if data is None:
            raise ValidationError(
                {"run": ["A confusion matrix is for classification runs; this run is not one."]}
            )
        return Response(data)

    @extend_schema(
        parameters=[
            OpenApiParameter("runs", str, required=True),
            OpenApiParameter("baseline", int),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=False, methods=["get"])
    def compare(self, request: Request) -> Response:
        """Runs side by side: metrics with intervals, differences to a baseline, loss curves."""
        ids = _ids(request, "runs")
        if not ids or len(ids) > selectors.MAX_COMPARED:
            raise ValidationError({"runs": [f"Give 1 to {selectors.MAX_COMPARED} run ids."]})
        found = {run.pk: run for run in self.get_queryset().filter(pk__in=ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ValidationError({"runs": [f"No runs with ids {missing} among yours."]})
        baseline = query_id(request, "baseline")
        return Response(selectors.comparison([found[i] for i in ids], baseline_id=baseline))

    @extend_schema(
        parameters=[
            OpenApiParameter("a", int, required=True),
            OpenApiParameter("b", int, required=True),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=False, methods=["get"])
    def diff(self, request: Request) -> Response:
        """Examples where run A did better than run B, and the reverse."""
        ids = _ids(request, "a") + _ids(request, "b")
        if len(ids) != 2:
            raise ValidationError({"a": ["Give one run id as a and one as b."]})
        runs = {run.pk: run for run in self.get_queryset().filter(pk__in=ids)}
        if len(runs) != len(set(ids)):
            raise ValidationError({"a": ["Both runs must be yours."]})
        return Response(selectors.example_diff(runs[ids[0]], runs[ids[1]]))

    @extend_schema(
        parameters=[OpenApiParameter("project", int, required=True)], responses=OpenApiTypes.OBJECT
    )
    @action(detail=False, methods=["get"])
    def goals(self, request: Request) -> Response:
        """Each goal of a project: status, measured value, best model so far, and the metric
        over time across evaluations."""
        project = get_project_for_user(request.user, request.query_params.get("project"))
        return Response(
            [
                {
                    "goal": item["goal"].pk,
                    "metric": item["goal"].metric,
                    "comparison": item["goal"].comparison,
                    "target": item["goal"].target,
                    "split": item["goal"].split,
                    "status": item["goal"].status,
                    "measured_value": item["goal"].measured_value,
                    "measured_source": item["goal"].measured_source,
                    "best": item["best"],
                    "points": item["points"],
                }
                for item in selectors.goal_progress(project)
            ]
        )


@extend_schema_view(
    create=extend_schema(request=s.BiasLaunchSerializer, responses={201: s.BiasReportSerializer}),
)
class BiasReportViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Bias and fairness reports: CrowS-Pairs, BOLD, WinoBias, and metric slices."""

    serializer_class = s.BiasReportSerializer
    required_actions = {"create": Action.RUN_JOBS, "cancel": Action.RUN_JOBS}
    create_serializer_class = s.BiasLaunchSerializer
    filterset_fields = ("project", "kind", "status", "model_version")

    def scoped_queryset(self, user):
        return selectors.bias_reports_for_user(user)

    def perform_service_create(self, data):
        if data["kind"] == BiasKind.SLICE:
            return services.slice_report_launch(
                actor=self.request.user,
                evaluation=data["evaluation"],
                column=data["column"],
                metric=data.get("metric"),
            )
        return services.bias_report_launch(
            actor=self.request.user,
            model_version=data["model_version"],
            kind=data["kind"],
            probe_version=data.get("probe_version"),
            params=data.get("params"),
        )

    @extend_schema(request=None, responses=s.BiasReportSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(
            job_cancel(actor=request.user, job=self.get_object()), status_code=status.HTTP_200_OK
        )
