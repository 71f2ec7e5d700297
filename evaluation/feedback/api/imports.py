"""REST endpoint of preference imports: existing preference data (JSONL or CSV in trl's
formats, e.g. hh-rlhf) uploaded as a new dataset of the data stage (feedback-imports: create).

The import is the data stage's upload with the layout's row checks; the answer is its ingest
job (202), followed at ``data-jobs/{id}/`` like any other.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from datasets_app.api.serializers import DataJobSerializer
from datasets_app.selectors import data_jobs_for_user
from datasets_app.services import parse_json_field
from datasets_app.uploads import SizeLimitedUploadMixin, UploadParser
from evaluation.feedback.services.exports import EXPORT_FORMATS, PREFERENCE, preference_import
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import StrictSerializer
from llmhub.api.viewsets import ScopedViewSet
from projects.permissions import Action
from projects.selectors import projects_for_user


class FeedbackImportSerializer(StrictSerializer):
    """Only types here: the file and the roles are checked by the service (the layout's row
    validator, the data stage's upload checks)."""

    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    file = serializers.FileField(
        allow_empty_file=True,  # the service says "The file is empty." as the data stage does
        use_url=False,
        error_messages={"required": "Upload the preference file (JSONL or CSV)."},
    )
    format = serializers.ChoiceField(
        choices=EXPORT_FORMATS,
        default=PREFERENCE,
        help_text="preference: prompt/chosen/rejected (default); unpaired: "
        "prompt/completion/label, the label true/false, 1/0, yes/no or thumbs up/down.",
    )
    name = serializers.CharField(
        max_length=120,
        required=False,
        allow_blank=True,
        default="",
        help_text="The new dataset's name; default: the file's name.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    column_roles = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='role -> column where the file names them otherwise, e.g. {"chosen": '
        '"chosen_response", "rejected": "rejected_response"} for hh-rlhf.',
    )


class FeedbackImportViewSet(SizeLimitedUploadMixin, ScopedViewSet):
    """Import preference data as a new dataset (multipart upload; 202 with the ingest job).
    A missing or empty field in a row is refused naming its line, and nothing is stored."""

    upload_actions = ("create",)
    serializer_class = DataJobSerializer
    parser_classes = (UploadParser,)
    required_actions = {"create": Action.EDIT_DATA}

    def scoped_queryset(self, user):
        return data_jobs_for_user(user)

    @extend_schema(
        request={"multipart/form-data": FeedbackImportSerializer},
        responses={202: DataJobSerializer},
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        self.refuse_oversized_upload(request)
        data = self._validated(FeedbackImportSerializer, request.data)
        job = preference_import(
            actor=request.user,
            project=data["project"],
            uploaded_file=data["file"],
            name=data["name"],
            format=data["format"],
            column_roles=parse_json_field(data.get("column_roles"), field="column_roles"),
            description=data["description"],
        )
        return self.respond(job, status_code=status.HTTP_202_ACCEPTED)
