"""Serializers of feedback campaigns, their items and judgments.

A campaign read by a rater (who may label but not see the team's work) leaves out what would
name a model or the rest of the project: its source's parameters (run, endpoint and version
ids) and the other raters. Items and judgments are read only by those who see the team's work
(raters get items one at a time through their assignments).
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.fields import empty

from evaluation.feedback.models import (
    MAX_OVERLAP,
    Campaign,
    FeedbackTask,
    Item,
    ItemSource,
    Judgment,
)
from evaluation.feedback.services.campaigns import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import StrictSerializer
from projects.permissions import Action
from projects.selectors import projects_for_user, team_ids_for

# Shown only to those who see the team's work.
WORK_FIELDS = ("source_params", "raters", "created_by")


class CampaignSerializer(serializers.ModelSerializer):
    raters = serializers.SerializerMethodField()
    n_items = serializers.IntegerField(read_only=True)
    n_raters = serializers.IntegerField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = Campaign
        fields = (
            "id",
            "project",
            "name",
            "task",
            "instructions",
            "criteria",
            "overlap",
            "blind",
            "assignment_timeout_seconds",
            "status",
            "source",
            "source_params",
            "raters",
            "n_items",
            "n_raters",
            "created_by",
            "created_at",
            "launched_at",
            "closed_at",
        )
        read_only_fields = fields

    def get_raters(self, campaign: Campaign) -> list[int]:
        return [row.user_id for row in campaign.rater_rows.all()]

    def _work_team_ids(self) -> set[int]:
        # Once per serializer (a list): the teams whose work the requesting user sees.
        if not hasattr(self, "_work_teams"):
            request = self.context.get("request")
            user = getattr(request, "user", None)
            self._work_teams = (
                set(team_ids_for(user, Action.VIEW_WORK).values_list("team_id", flat=True))
                if user is not None
                else set()
            )
        return self._work_teams

    def to_representation(self, campaign: Campaign) -> dict:
        data = super().to_representation(campaign)
        # A list's child serializer is one instance: the teams are read once per response.
        if campaign.project.team_id not in self._work_team_ids():
            for name in WORK_FIELDS:
                data.pop(name, None)
        return data


class MissingIsDefaultBooleanField(serializers.BooleanField):
    """A boolean whose absence from a multipart form means its default (DRF reads a missing
    form checkbox as False: a campaign uploaded without ``blind`` must stay blind)."""

    default_empty_html = empty


class CampaignCreateSerializer(StrictSerializer):
    """JSON, or multipart with ``upload`` (a JSONL or CSV file) for ``source=upload``; in
    multipart, ``source_params``, ``criteria`` and ``raters`` are JSON text."""

    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    task = serializers.ChoiceField(choices=FeedbackTask.choices)
    source = serializers.ChoiceField(choices=ItemSource.choices)
    source_params = serializers.JSONField(
        required=False,
        default=dict,
        help_text='evaluation: {"runs": [ids]}; requests: {"endpoint": id, "version": id, '
        '"since": iso, "until": iso, "thumbs_down_only": bool, "limit": n}; versions: '
        "{} (the generation job adds the items); upload: {} (send the file as upload).",
    )
    instructions = serializers.CharField(
        max_length=20_000, required=False, allow_blank=True, default=""
    )
    criteria = serializers.JSONField(
        required=False,
        default=None,
        help_text="Rating campaigns: 1-10 criterion names (default helpfulness, harmlessness, "
        "factuality).",
    )
    overlap = serializers.IntegerField(min_value=1, max_value=MAX_OVERLAP, default=1)
    blind = MissingIsDefaultBooleanField(default=True)
    assignment_timeout_seconds = serializers.IntegerField(
        min_value=MIN_TIMEOUT_SECONDS, max_value=MAX_TIMEOUT_SECONDS, default=1800
    )
    raters = serializers.JSONField(
        required=False, default=list, help_text="User ids of team members who may label."
    )
    upload = serializers.FileField(required=False, allow_null=True, default=None)


class CampaignUpdateSerializer(StrictSerializer):
    """What may change; after launch only name, instructions, overlap and timeout (the rest
    is refused with the reason)."""

    name = serializers.CharField(max_length=120, required=False)
    instructions = serializers.CharField(max_length=20_000, required=False, allow_blank=True)
    criteria = serializers.JSONField(required=False)
    overlap = serializers.IntegerField(min_value=1, max_value=MAX_OVERLAP, required=False)
    blind = serializers.BooleanField(required=False)
    assignment_timeout_seconds = serializers.IntegerField(
        min_value=MIN_TIMEOUT_SECONDS, max_value=MAX_TIMEOUT_SECONDS, required=False
    )
    task = serializers.CharField(required=False, help_text="Refused: listed to say why.")
    raters = serializers.JSONField(required=False)


class RatersSerializer(StrictSerializer):
    raters = serializers.ListField(child=serializers.IntegerField(min_value=1), max_length=500)


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = (
            "id",
            "campaign",
            "index",
            "prompt",
            "responses",
            "origin",
            "taken",
            "submitted",
            "adjudicated",
        )
        read_only_fields = fields


class JudgmentSerializer(serializers.ModelSerializer):
    campaign = serializers.IntegerField(source="item.campaign_id", read_only=True)
    rater = serializers.CharField(source="rater.username", default=None, read_only=True)
    ai_rater = serializers.CharField(source="ai_rater.name", default=None, read_only=True)
    order = serializers.JSONField(source="assignment.order", read_only=True)

    class Meta:
        model = Judgment
        fields = (
            "id",
            "campaign",
            "item",
            "assignment",
            "rater",
            "ai_rater",
            "order",
            "value",
            "seconds_spent",
            "created_at",
            "withdrawn_at",
        )
        read_only_fields = fields
