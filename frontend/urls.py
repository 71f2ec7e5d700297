from django.contrib.auth import views as auth_views
from django.urls import path

from frontend.views import (
    accounts,
    data,
    data_browser,
    evaluation,
    feedback,
    monitor,
    projects,
    runs,
    serving,
    teams,
    training,
)
from frontend.views import base_models as base_model_views
from frontend.views.helpers import guard_project_pages

urlpatterns = [
    path("", projects.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", accounts.signup, name="signup"),
    path("account/", accounts.account, name="account"),
    path("account/tokens/<int:pk>/revoke/", accounts.token_revoke, name="token-revoke"),
    path("teams/new/", teams.team_create, name="team-create"),
    path("teams/<slug:slug>/", teams.team_detail, name="team-detail"),
    path("members/<int:pk>/role/", teams.member_role, name="member-role"),
    path("members/<int:pk>/remove/", teams.member_remove, name="member-remove"),
    path("projects/new/", projects.project_create, name="project-create"),
    path("projects/<int:pk>/", projects.project_detail, name="project-detail"),
    path("projects/<int:pk>/edit/", projects.project_edit, name="project-edit"),
    path("projects/<int:pk>/delete/", projects.project_delete, name="project-delete"),
    path("projects/<int:pk>/activity/", projects.project_activity, name="project-activity"),
    path("projects/<int:pk>/goals/new/", projects.goal_create, name="goal-create"),
    path(
        "projects/<int:pk>/health-checks/", projects.health_check_launch, name="health-check-launch"
    ),
    path(
        "health-checks/<int:pk>/cancel/", projects.health_check_cancel, name="health-check-cancel"
    ),
    path("goals/<int:pk>/edit/", projects.goal_edit, name="goal-edit"),
    path("goals/<int:pk>/delete/", projects.goal_delete, name="goal-delete"),
    path("projects/<int:pk>/data/", data.data_stage, name="data-stage"),
    path("projects/<int:pk>/data/upload/", data.dataset_upload, name="dataset-upload"),
    path("projects/<int:pk>/recipes/new/", data.recipe_edit, name="recipe-create"),
    path("projects/<int:pk>/recipes/<int:recipe_pk>/", data.recipe_edit, name="recipe-edit"),
    path("datasets/<int:pk>/", data.dataset_detail, name="dataset-page"),
    path("datasets/<int:pk>/diff/", data_browser.dataset_diff, name="dataset-diff"),
    path("versions/<int:pk>/", data.version_detail, name="version-page"),
    path("versions/<int:pk>/clean/", data.version_clean, name="version-clean"),
    path("versions/<int:pk>/split/", data.version_split, name="version-split"),
    path("versions/<int:pk>/tokenizer/", data.version_tokenizer, name="version-tokenizer"),
    path("versions/<int:pk>/roles/", data.version_roles, name="version-roles"),
    path("versions/<int:pk>/profile/", data.version_profile, name="version-profile"),
    path("versions/<int:pk>/rows/", data_browser.version_rows, name="version-rows"),
    path("projects/<int:pk>/train/", training.train_stage, name="train-stage"),
    path("projects/<int:pk>/train/new/", training.training_launch, name="training-launch"),
    path("projects/<int:pk>/train/runs/", runs.runs_page, name="runs-table"),
    path("training-jobs/<int:pk>/", training.training_job_detail, name="training-job-page"),
    path("training-jobs/<int:pk>/cancel/", training.training_job_cancel, name="training-cancel"),
    path("training-jobs/<int:pk>/resume/", training.training_job_resume, name="training-resume"),
    path("model-versions/<int:pk>/", training.model_version_detail, name="model-version-page"),
    path("model-versions/<int:pk>/stage/", training.model_version_stage, name="model-stage"),
    path(
        "model-versions/<int:pk>/download/",
        runs.model_version_download,
        name="model-version-download",
    ),
    path("sweeps/<int:pk>/", training.sweep_detail, name="sweep-page"),
    path(
        "projects/<int:pk>/train/base-models/",
        base_model_views.base_models_page,
        name="base-models-page",
    ),
    path(
        "projects/<int:pk>/train/base-models/add/",
        base_model_views.base_model_add_package,
        name="base-model-add-package",
    ),
    path(
        "projects/<int:pk>/train/base-models/upload/",
        base_model_views.base_model_upload,
        name="base-model-upload",
    ),
    path("projects/<int:pk>/evaluate/", evaluation.evaluate_stage, name="evaluate-stage"),
    path("projects/<int:pk>/evaluate/compare/", evaluation.compare, name="evaluate-compare"),
    path("projects/<int:pk>/evaluate/bias/", evaluation.bias_report_launch, name="bias-launch"),
    path("evaluation-runs/<int:pk>/", evaluation.evaluation_run_detail, name="evaluation-run-page"),
    path("evaluation-runs/<int:pk>/slice/", evaluation.evaluation_slice, name="evaluation-slice"),
    path("bias-reports/<int:pk>/", evaluation.bias_report_detail, name="bias-report-page"),
    path("projects/<int:pk>/deploy/", serving.deploy_stage, name="deploy-stage"),
    path(
        "projects/<int:pk>/deploy/endpoints/new/", serving.endpoint_create, name="endpoint-create"
    ),
    path(
        "projects/<int:pk>/deploy/keys/new/", serving.serving_key_create, name="serving-key-create"
    ),
    path("deploy/keys/<int:pk>/revoke/", serving.serving_key_revoke, name="serving-key-revoke"),
    path("deploy/endpoints/<int:pk>/", serving.endpoint_detail, name="endpoint-page"),
    path("deploy/endpoints/<int:pk>/promote/", serving.endpoint_promote, name="endpoint-promote"),
    path(
        "deploy/endpoints/<int:pk>/rollback/", serving.endpoint_rollback, name="endpoint-rollback"
    ),
    path("deploy/endpoints/<int:pk>/canary/", serving.endpoint_canary, name="endpoint-canary"),
    path(
        "deploy/endpoints/<int:pk>/settings/", serving.endpoint_settings, name="endpoint-settings"
    ),
    path("deploy/endpoints/<int:pk>/archive/", serving.endpoint_archive, name="endpoint-archive"),
    path("deploy/endpoints/<int:pk>/gate/", serving.endpoint_gate, name="endpoint-gate"),
    path(
        "deploy/endpoints/<int:pk>/playground/",
        serving.endpoint_playground,
        name="endpoint-playground",
    ),
    path(
        "deploy/endpoints/<int:pk>/feedback/", serving.endpoint_feedback, name="endpoint-feedback"
    ),
    path("projects/<int:pk>/monitor/", monitor.monitor_stage, name="monitor-stage"),
    path(
        "projects/<int:pk>/monitor/endpoints/<int:endpoint_pk>/",
        monitor.endpoint_monitor,
        name="monitor-endpoint",
    ),
    path(
        "projects/<int:pk>/monitor/endpoints/<int:endpoint_pk>/data/",
        monitor.endpoint_monitor_data,
        name="monitor-endpoint-data",
    ),
    path(
        "projects/<int:pk>/monitor/endpoints/<int:endpoint_pk>/requests/",
        monitor.request_log,
        name="monitor-request-log",
    ),
    path(
        "projects/<int:pk>/monitor/endpoints/<int:endpoint_pk>/drift/",
        monitor.drift_check,
        name="monitor-drift-check",
    ),
    path(
        "projects/<int:pk>/monitor/endpoints/<int:endpoint_pk>/settings/",
        monitor.monitor_settings,
        name="monitor-settings",
    ),
    path(
        "projects/<int:pk>/monitor/alerts/<int:alert_pk>/acknowledge/",
        monitor.alert_acknowledge,
        name="monitor-alert-acknowledge",
    ),
    path(
        "projects/<int:pk>/monitor/alerts/<int:alert_pk>/resolve/",
        monitor.alert_resolve,
        name="monitor-alert-resolve",
    ),
    path(
        "projects/<int:pk>/monitor/alerts/<int:alert_pk>/retrain/",
        monitor.alert_retrain,
        name="monitor-alert-retrain",
    ),
    path(
        "projects/<int:pk>/monitor/deliveries/<int:delivery_pk>/retry/",
        monitor.delivery_retry,
        name="monitor-delivery-retry",
    ),
    path("projects/<int:pk>/feedback/", feedback.feedback_stage, name="feedback-stage"),
    path(
        "projects/<int:pk>/feedback/campaigns/new/",
        feedback.campaign_create,
        name="feedback-campaign-create",
    ),
    path("feedback/", feedback.my_campaigns, name="my-campaigns"),
    path("feedback/campaigns/<int:pk>/", feedback.campaign_detail, name="feedback-campaign-page"),
    path("feedback/campaigns/<int:pk>/rate/", feedback.rate, name="feedback-rate"),
    path("feedback/campaigns/<int:pk>/launch/", feedback.campaign_launch, name="feedback-launch"),
    path("feedback/campaigns/<int:pk>/close/", feedback.campaign_close, name="feedback-close"),
    path(
        "feedback/campaigns/<int:pk>/settings/",
        feedback.campaign_settings,
        name="feedback-settings",
    ),
    path(
        "feedback/campaigns/<int:pk>/adjudicate/",
        feedback.item_adjudicate,
        name="feedback-adjudicate",
    ),
    path(
        "feedback/campaigns/<int:pk>/ai-raters/new/",
        feedback.ai_rater_create,
        name="feedback-ai-rater-create",
    ),
    path(
        "feedback/campaigns/<int:pk>/ai-raters/<int:ai_rater_pk>/run/",
        feedback.ai_rating_launch,
        name="feedback-ai-rating-launch",
    ),
    path(
        "feedback/campaigns/<int:pk>/ai-raters/<int:ai_rater_pk>/approve/",
        feedback.ai_rater_approve,
        name="feedback-ai-rater-approve",
    ),
    path("feedback/campaigns/<int:pk>/export/", feedback.export_launch, name="feedback-export"),
    path("projects/<int:pk>/<slug:stage>/", projects.project_stage, name="project-stage"),
]

# Raters see their campaigns, nothing of the project's work: every page under projects/<pk>/
# turns them away before its view runs (the overview to their campaigns, the rest 404).
urlpatterns = guard_project_pages(urlpatterns)
