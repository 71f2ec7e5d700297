"""The rater API (external annotation workforces label through it, and the rater screen's
script calls it):

- ``POST feedback-labeling/{campaign}/next/``: the rater's current item, else the next one
  fairly assigned; ``assignment`` is null when nothing is left for them;
- ``POST feedback-labeling/{campaign}/undo/``: withdraw the rater's last judgment, its item
  theirs again (the answer is the same shape as ``next``);
- ``POST feedback-labeling/{campaign}/adjudicate/`` ``{"item", "value"}``: a manager's label for
  an item (the item's own order: position 1 / ``a`` is ``responses[0]``);
- ``POST feedback-assignments/{id}/judgment/`` ``{"value": {...}, "seconds_spent": 12.5}``;
- ``POST feedback-assignments/{id}/skip/`` ``{"reason": "..."}``.

Values name responses **as shown**: ``a``/``b`` and positions 1..n are those of ``responses``
in the answer of ``next`` (see ``evaluation/feedback/services/labeling.py`` for each task's
shape). What a rater receives never holds another rater's answer; in blind mode it names no
model and no version either (responses are ``{"position", "text"}`` only).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.feedback.assignment import (
    labeling_assignments_for_user,
    labeling_campaigns_for_user,
    rater_progress,
)
from evaluation.feedback.models import Assignment, Campaign, Item
from evaluation.feedback.services import labeling as services
from llmhub.api.serializers import StrictSerializer
from llmhub.api.viewsets import ScopedViewSet
from projects.permissions import Action

# --- what a rater sees ------------------------------------------------------------------------


def rater_view(*, campaign: Campaign, assignment: Assignment | None, rater) -> dict:
    """The answer of ``next`` and ``undo``: the item as this rater sees it, in their order."""
    body: dict = {
        "campaign": {
            "id": campaign.pk,
            "name": campaign.name,
            "task": campaign.task,
            "instructions": campaign.instructions,
            "criteria": services.campaign_criteria(campaign) if campaign.task == "rating" else [],
            "blind": campaign.blind,
        },
        "assignment": None,
        "progress": rater_progress(rater=rater, campaign=campaign),
    }
    if assignment is not None:
        item = assignment.item
        responses = []
        for position, index in enumerate(assignment.order, start=1):
            response = item.responses[index]
            shown = {"position": position, "text": response.get("text", "")}
            if not campaign.blind and response.get("label"):
                shown["label"] = response["label"]
            responses.append(shown)
        body["assignment"] = {
            "id": assignment.pk,
            "status": assignment.status,
            "assigned_at": assignment.assigned_at,
            "expires_at": assignment.expires_at,
            "item": {"id": item.pk, "index": item.index, "prompt": item.prompt},
            "responses": responses,
        }
    return body


class ShownResponseSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="1-based, in the order this rater sees.")
    text = serializers.CharField()
    label = serializers.CharField(required=False, help_text="Only when the campaign is not blind.")


class ShownItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    index = serializers.IntegerField()
    prompt = serializers.CharField()


class ShownAssignmentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    assigned_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    item = ShownItemSerializer()
    responses = ShownResponseSerializer(many=True)


class LabelingCampaignSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    task = serializers.CharField()
    instructions = serializers.CharField()
    criteria = serializers.ListField(child=serializers.CharField())
    blind = serializers.BooleanField()


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total_for_me = serializers.IntegerField()


class RaterViewSerializer(serializers.Serializer):
    campaign = LabelingCampaignSerializer()
    assignment = ShownAssignmentSerializer(allow_null=True)
    progress = ProgressSerializer()


class JudgmentSubmitSerializer(StrictSerializer):
    value = serializers.JSONField(
        help_text='As shown: {"choice": "a"|"b"|"tie"|"both_bad", "reason"} (pairwise), '
        '{"ranking": [positions best first]}, {"ratings": [{criterion: 1..5} per shown '
        'response]}, {"text", "response": position} (correction).'
    )
    seconds_spent = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=services.MAX_SECONDS_SPENT
    )


class JudgmentAnswerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    assignment = serializers.IntegerField(source="assignment_id")
    item = serializers.IntegerField(source="item_id")
    value = serializers.JSONField(help_text="Stored in the item's own order.")
    seconds_spent = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()


class SkipSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=services.MAX_SKIP_REASON_CHARS)


class AssignmentAnswerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField(source="item_id")
    status = serializers.CharField()
    skip_reason = serializers.CharField()


class AdjudicateSerializer(StrictSerializer):
    item = serializers.IntegerField(min_value=1)
    value = serializers.JSONField(help_text="In the item's own order (a = responses[0]).")


class AdjudicatedItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    index = serializers.IntegerField()
    adjudicated = serializers.JSONField()


# --- views ------------------------------------------------------------------------------------


class LabelingViewSet(ScopedViewSet):
    """A rater's queue in one campaign (the campaigns they rate; managers reach the route and
    are told why they may not label one they do not rate)."""

    serializer_class = RaterViewSerializer
    read_action = Action.LABEL
    required_actions = {
        "next": Action.LABEL,
        "undo": Action.LABEL,
        "adjudicate": Action.EDIT_PROJECT,
    }

    def scoped_queryset(self, user):
        return labeling_campaigns_for_user(user)

    def _view(self, campaign: Campaign, assignment: Assignment | None) -> Response:
        return Response(
            rater_view(campaign=campaign, assignment=assignment, rater=self.request.user)
        )

    @extend_schema(request=None, responses=RaterViewSerializer)
    @action(detail=True, methods=["post"])
    def next(self, request: Request, pk=None) -> Response:
        """The current assignment, else the next item (``assignment`` null: none left)."""
        campaign = self.get_object()
        return self._view(campaign, services.assignment_next(rater=request.user, campaign=campaign))

    @extend_schema(request=None, responses=RaterViewSerializer)
    @action(detail=True, methods=["post"])
    def undo(self, request: Request, pk=None) -> Response:
        """Withdraw the last judgment; its item is the current one again (400: none to undo)."""
        campaign = self.get_object()
        assignment = services.judgment_undo(rater=request.user, campaign=campaign)
        if assignment is None:
            raise serializers.ValidationError(
                {"non_field_errors": ["You have no judgment to undo in this campaign."]}
            )
        return self._view(campaign, assignment)

    @extend_schema(request=AdjudicateSerializer, responses=AdjudicatedItemSerializer)
    @action(detail=True, methods=["post"])
    def adjudicate(self, request: Request, pk=None) -> Response:
        """Record THE label of an item in disagreement (the raters' judgments stay)."""
        campaign = self.get_object()
        data = self._validated(AdjudicateSerializer, request.data)
        item = Item.objects.filter(campaign=campaign, pk=data["item"]).first()
        if item is None:
            raise serializers.ValidationError({"item": ["No item of this campaign has this id."]})
        item = services.item_adjudicate(actor=request.user, item=item, value=data["value"])
        return Response(AdjudicatedItemSerializer(item).data)


class AssignmentLabelingViewSet(ScopedViewSet):
    """A rater's answers to their assignments: a judgment or a skip."""

    serializer_class = AssignmentAnswerSerializer
    read_action = Action.LABEL
    required_actions = {"judgment": Action.LABEL, "skip": Action.LABEL}

    def scoped_queryset(self, user):
        return labeling_assignments_for_user(user)

    @extend_schema(request=JudgmentSubmitSerializer, responses={201: JudgmentAnswerSerializer})
    @action(detail=True, methods=["post"])
    def judgment(self, request: Request, pk=None) -> Response:
        """Submit the judgment (committed before this answers; a second one is a 400)."""
        assignment = self.get_object()
        data = self._validated(JudgmentSubmitSerializer, request.data)
        judgment = services.judgment_submit(
            rater=request.user,
            assignment=assignment,
            value=data["value"],
            seconds_spent=data.get("seconds_spent"),
        )
        return Response(JudgmentAnswerSerializer(judgment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SkipSerializer, responses=AssignmentAnswerSerializer)
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, pk=None) -> Response:
        """Skip the item with a reason: it goes to others, never back to this rater."""
        assignment = self.get_object()
        data = self._validated(SkipSerializer, request.data)
        assignment = services.assignment_skip(
            rater=request.user, assignment=assignment, reason=data["reason"]
        )
        return Response(AssignmentAnswerSerializer(assignment).data)
