"""The /api/v1/ routes of every app, on one router."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from datasets_app.api import views as data_views
from evaluation.api import views as evaluation_views
from evaluation.feedback.api import ai_raters as feedback_ai_views
from evaluation.feedback.api import campaigns as feedback_campaign_views
from evaluation.feedback.api import exports as feedback_export_views
from evaluation.feedback.api import imports as feedback_import_views
from evaluation.feedback.api import labeling as feedback_labeling_views
from evaluation.feedback.api import stats as feedback_stats_views
from projects.api import views as project_views
from serving.api import views as serving_views
from serving.monitoring.api import alerts as alert_views
from serving.monitoring.api import drift as drift_views
from training.api import base_models as base_model_views
from training.api import views as training_views

router = DefaultRouter()
router.register("teams", project_views.TeamViewSet, basename="team")
router.register("members", project_views.MemberViewSet, basename="member")
router.register("projects", project_views.ProjectViewSet, basename="project")
router.register("goals", project_views.GoalViewSet, basename="goal")
router.register("activity", project_views.ActivityViewSet, basename="activity")
router.register("tokens", project_views.ApiTokenViewSet, basename="token")
router.register("health-checks", project_views.HealthCheckViewSet, basename="health-check")
router.register("datasets", data_views.DatasetViewSet, basename="dataset")
router.register("dataset-versions", data_views.VersionViewSet, basename="dataset-version")
router.register("recipes", data_views.RecipeViewSet, basename="recipe")
router.register("tokenizers", data_views.TokenizerViewSet, basename="tokenizer")
router.register("data-jobs", data_views.DataJobViewSet, basename="data-job")
router.register("training-jobs", training_views.TrainingJobViewSet, basename="training-job")
router.register("sweeps", training_views.SweepViewSet, basename="sweep")
router.register("base-models", base_model_views.BaseModelViewSet, basename="base-model")
router.register("models", training_views.RegisteredModelViewSet, basename="registered-model")
router.register("model-versions", training_views.ModelVersionViewSet, basename="model-version")
router.register("evaluation-runs", evaluation_views.EvaluationRunViewSet, basename="evaluation-run")
router.register("bias-reports", evaluation_views.BiasReportViewSet, basename="bias-report")
router.register("endpoints", serving_views.EndpointViewSet, basename="endpoint")
router.register("serving-keys", serving_views.ServingKeyViewSet, basename="serving-key")
router.register("request-logs", serving_views.RequestLogViewSet, basename="request-log")
router.register(
    "response-feedback", serving_views.ResponseFeedbackViewSet, basename="response-feedback"
)
router.register("alerts", alert_views.AlertViewSet, basename="alert")
router.register("drift-jobs", drift_views.DriftJobViewSet, basename="drift-job")
router.register("monitor-settings", drift_views.MonitorSettingsViewSet, basename="monitor-settings")
router.register(
    "webhook-deliveries", alert_views.WebhookDeliveryViewSet, basename="webhook-delivery"
)
router.register(
    "feedback-campaigns", feedback_campaign_views.CampaignViewSet, basename="feedback-campaign"
)
router.register("feedback-items", feedback_campaign_views.ItemViewSet, basename="feedback-item")
router.register(
    "feedback-judgments", feedback_campaign_views.JudgmentViewSet, basename="feedback-judgment"
)
router.register(
    "feedback-exports", feedback_export_views.FeedbackExportViewSet, basename="feedback-export"
)
router.register(
    "feedback-imports", feedback_import_views.FeedbackImportViewSet, basename="feedback-import"
)
router.register(
    "feedback-ai-raters", feedback_ai_views.AIRaterViewSet, basename="feedback-ai-rater"
)
router.register(
    "feedback-ai-rating-jobs",
    feedback_ai_views.AIRatingJobViewSet,
    basename="feedback-ai-rating-job",
)
router.register(
    "feedback-generations", feedback_ai_views.GenerationJobViewSet, basename="feedback-generation"
)
router.register(
    "feedback-labeling", feedback_labeling_views.LabelingViewSet, basename="feedback-labeling"
)
router.register(
    "feedback-assignments",
    feedback_labeling_views.AssignmentLabelingViewSet,
    basename="feedback-assignment",
)
router.register(
    "feedback-stats", feedback_stats_views.FeedbackStatsViewSet, basename="feedback-stats"
)

urlpatterns = [
    path("me/", project_views.MeView.as_view(), name="me"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include(router.urls)),
]
