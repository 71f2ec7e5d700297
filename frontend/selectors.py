"""Reads that page summaries combine from several stages, built on the stages' own scoped
selectors (so a role sees here exactly what it sees there), each in a fixed number of queries
whatever the amount of data: the Feedback tab's raw agreement per campaign, and the project
page's feedback loop (what is served, its ratings, the preference data made from them, the
versions trained on it, and the newer version's win rate over the older one)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Case, Count, F, Q, Sum, TextField, When, Window
from django.db.models.fields.json import KT, KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce

from evaluation.feedback import export_selectors
from evaluation.feedback import selectors as feedback_selectors
from evaluation.feedback.models import Campaign, FeedbackTask
from llmhub.models import JobStatus
from projects.models import Project
from projects.selectors import User
from serving import selectors as serving_selectors
from training import selectors as training_selectors
from training.runtime.config import PREFERENCE_KINDS

# What two raters of a campaign agree on, per task, as a path into the judgment's value: the
# pairwise choice, the top of a ranking, the whole list of ratings. Corrections are free text:
# not compared.
AGREEMENT_KEY = {
    FeedbackTask.PAIRWISE: "value__choice",
    FeedbackTask.RANKING: "value__ranking__0",
    FeedbackTask.RATING: "value__ratings",
}
# How many of each the project page's loop shows (the newest).
LOOP_ROWS = 5


def raw_agreement(campaigns: list[Campaign], user: User) -> dict[int, float | None]:
    """Per campaign, the share of pairs of human judgments on the same item that agree (the
    Feedback tab's summary; the campaign page has kappa and alpha with their intervals).

    One aggregate query whatever the number of judgments: each judgment is counted with the
    judgments of its item (``n_item``) and of its item with the same label (``n_key``); summed
    over the judgments, ``n - 1`` gives twice the pairs, so the agreeing pairs over all pairs
    is ``sum(n_key - 1) / sum(n_item - 1)``."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for campaign in campaigns:
        if campaign.task in AGREEMENT_KEY:
            by_task[campaign.task].append(campaign.pk)
    result: dict[int, float | None] = {campaign.pk: None for campaign in campaigns}
    if not by_task:
        return result
    label = Case(
        *(
            When(item__campaign_id__in=ids, then=KT(AGREEMENT_KEY[task]))
            for task, ids in by_task.items()
        ),
        default=None,
        output_field=TextField(),
    )
    ids = [pk for pks in by_task.values() for pk in pks]
    counted = (
        feedback_selectors.judgments_for_user(user)
        .filter(item__campaign_id__in=ids, withdrawn_at=None, rater__isnull=False)
        .annotate(label=label)
        .filter(label__isnull=False)
        .annotate(
            campaign=F("item__campaign_id"),
            n_key=Window(Count("pk"), partition_by=[F("item_id"), F("label")]),
            n_item=Window(Count("pk"), partition_by=[F("item_id")]),
        )
        .order_by()
    )
    # The windows are computed in a subquery Django wraps around them; one pair of sums per
    # campaign, filtered, in the same query.
    sums = counted.aggregate(
        **{
            name: Sum(F(column) - 1, filter=Q(campaign=pk))
            for pk in ids
            for name, column in ((f"agree_{pk}", "n_key"), (f"pairs_{pk}", "n_item"))
        }
    )
    for pk in ids:
        pairs = sums[f"pairs_{pk}"]
        result[pk] = (sums[f"agree_{pk}"] or 0) / pairs if pairs else None
    return result


# --- the project page's feedback loop ----------------------------------------------------------


def _version_id(raw: Any) -> int | None:
    """A response's ``model_version_id`` as read from JSON (a number, its text, or "null")."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _pairwise_counts(user: User, project: Project) -> list[dict[str, Any]]:
    """Per pairwise campaign of ``project`` and pair of model versions its items compare, the
    human judgments by choice (an adjudicated item's label replacing its raters'), as
    ``{"campaign", "campaign_name", "first", "second", "choice", "n"}``: one grouped query,
    a handful of rows."""
    rows = (
        feedback_selectors.judgments_for_user(user)
        .filter(
            item__campaign__project=project,
            item__campaign__task=FeedbackTask.PAIRWISE,
            withdrawn_at=None,
            rater__isnull=False,
        )
        .annotate(
            # KT() reads a field of the model itself; across the item, the transforms in full.
            first=KeyTextTransform("model_version_id", KeyTransform("0", "item__responses")),
            second=KeyTextTransform("model_version_id", KeyTransform("1", "item__responses")),
            choice=Coalesce(
                KeyTextTransform("choice", KeyTransform("value", "item__adjudicated")),
                KT("value__choice"),
            ),
        )
        .order_by()
        .values("item__campaign_id", "item__campaign__name", "first", "second", "choice")
        .annotate(n=Count("pk"))
    )
    found = []
    for row in rows:
        first, second = _version_id(row["first"]), _version_id(row["second"])
        if first is None or second is None or first == second:
            continue
        found.append(
            {
                "campaign": row["item__campaign_id"],
                "campaign_name": row["item__campaign__name"],
                "first": first,
                "second": second,
                "choice": row["choice"],
                "n": row["n"],
            }
        )
    return found


def _newer_win_rate(counts: list[dict[str, Any]], versions: dict[int, Any]) -> dict | None:
    """The newer version's win rate over the older one (ties and "both bad" as half a win, as
    the campaign page counts them, with its Wilson interval) in the most recent campaign that
    compared two versions; the pair with the most judgments if it compared several."""
    from evaluation.metrics.agreement import TIE_RESULTS, wilson_interval

    tallies: dict[tuple[int, int, int], dict[str, int]] = {}
    names = {row["campaign"]: row["campaign_name"] for row in counts}
    for row in counts:
        first, second = versions.get(row["first"]), versions.get(row["second"])
        if first is None or second is None:
            continue
        older, newer = sorted((first, second), key=lambda v: (v.created_at, v.pk))
        tally = tallies.setdefault(
            (row["campaign"], newer.pk, older.pk), {"wins": 0, "losses": 0, "ties": 0}
        )
        newer_choice = "a" if row["first"] == newer.pk else "b"
        if row["choice"] in TIE_RESULTS:
            tally["ties"] += row["n"]
        elif row["choice"] == newer_choice:
            tally["wins"] += row["n"]
        elif row["choice"] in ("a", "b"):
            tally["losses"] += row["n"]
    if not tallies:
        return None
    (campaign, newer, older), tally = max(
        tallies.items(), key=lambda kv: (kv[0][0], sum(kv[1].values()))
    )
    games = sum(tally.values())
    if not games:
        return None
    score = tally["wins"] + tally["ties"] / 2
    low, high = wilson_interval(score, games)
    return {
        "campaign": campaign,
        "campaign_name": names[campaign],
        "newer": versions[newer],
        "older": versions[older],
        **tally,
        "games": games,
        "value": score / games,
        "ci_low": low,
        "ci_high": high,
    }


def feedback_loop(user: User, project: Project) -> dict[str, Any]:
    """The project's feedback loop as the project page shows it: the endpoints serving a
    version, the newest campaigns with their human judgment counts, the preference data
    exported from campaigns, the training jobs (reward model, DPO, KTO) run on that data with
    the versions they made, and the newer version's win rate over the older one where a
    pairwise campaign compared them. Six queries at most, whatever the project holds; ``empty``
    when there is nothing to show yet."""
    served = list(
        serving_selectors.endpoints_for_user(user)
        .filter(project=project, archived_at=None, version__isnull=False)
        .order_by("name")[:LOOP_ROWS]
    )
    campaigns = list(
        feedback_selectors.campaigns_for_user(user)
        .filter(project=project)
        .prefetch_related(None)
        .annotate(n_judgments=Coalesce(Sum("items__submitted"), 0))
        .order_by("-created_at", "-pk")[:LOOP_ROWS]
    )
    exports = list(
        export_selectors.exports_for_user(user)
        .filter(project=project, status=JobStatus.SUCCEEDED, dataset_version__isnull=False)
        .order_by("-created_at", "-pk")[:LOOP_ROWS]
    )
    jobs = []
    if exports:
        jobs = list(
            training_selectors.training_jobs_for_user(user)
            .select_related("model_version__registered_model")
            .filter(
                project=project,
                kind__in=PREFERENCE_KINDS,
                train_version__in=[e.dataset_version_id for e in exports],
            )
            .order_by("-created_at", "-pk")[: LOOP_ROWS * 2]
        )
    trained_on: dict[int, list] = defaultdict(list)
    for job in jobs:
        trained_on[job.train_version_id].append(job)
    for export in exports:
        export.trained = trained_on[export.dataset_version_id]
    counts = _pairwise_counts(user, project)
    win_rate = None
    if counts:
        ids = {row["first"] for row in counts} | {row["second"] for row in counts}
        versions = {
            v.pk: v
            for v in training_selectors.model_versions_for_user(user).filter(
                pk__in=ids, registered_model__project=project
            )
        }
        win_rate = _newer_win_rate(counts, versions)
    return {
        "served": served,
        "campaigns": campaigns,
        "exports": exports,
        "win_rate": win_rate,
        "empty": not (served or campaigns or exports),
    }
