"""The manager's statistics of a campaign, in a fixed number of queries whatever its size.

:func:`campaign_stats` reads the campaign's raters, AI raters, items, assignment counts and
judgments (five queries), then computes in Python with :mod:`evaluation.metrics.agreement`:

- progress per rater and overall; time per item (median seconds);
- agreement among the human raters on the task's label (pairwise: the choice; ranking: the top
  choice; rating: each criterion's score per response, ordinal) -- Cohen's kappa with exactly
  two raters, Fleiss' kappa with more, Krippendorff's alpha always;
- each AI rater's agreement with the humans' label of the item (the adjudicated one, else the
  strict majority), beside the humans' own agreement with the majority of the others;
- position bias (how often the response shown first was chosen);
- items in disagreement (no majority, or ratings spread two points or more), adjudicated ones
  marked as such; raters far below the others (pairwise agreement with the rest under the
  median minus 0.2);
- win rates and a Bradley-Terry ranking of the models when two or more appear in the items.

Withdrawn judgments never count. An adjudicated item's label is the adjudicated one wherever an
item's label is used (AI agreement, win rates); inter-rater agreement stays on what the raters
said. Win rates count the humans' judgments (each one a comparison; for an adjudicated item
each takes the adjudicated label), never an AI rater's.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable
from typing import Any

from django.db.models import Count, QuerySet

from evaluation.feedback.models import (
    AIRater,
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignRater,
    FeedbackTask,
    Item,
    Judgment,
)
from projects.selectors import User, visible_to

# Bootstrap replicates per interval: a page load stays well under a second on 10,000 items.
STATS_BOOT = 400
MAX_DISAGREEMENTS = 200
OUTLIER_MARGIN = 0.2
MIN_SHARED_FOR_OUTLIER = 5
RATING_SPREAD = 2  # scores this far apart on one response's criterion are a disagreement

Unit = tuple  # (item id,) or (item id, response index, criterion)


def campaigns_with_stats_for_user(user: User) -> QuerySet[Campaign]:
    """Campaigns whose statistics ``user`` may read: those of the teams where they see the work
    (raters see none here: the statistics name raters, models and everyone's answers)."""
    return visible_to(Campaign.objects.select_related("project__team"), user)


def _labels(task: str, value: dict, criteria: list[str]) -> dict[Unit, Hashable]:
    """The labels one judgment value gives, per unit of agreement (relative to its item)."""
    if task == FeedbackTask.PAIRWISE:
        return {(): value.get("choice")}
    if task == FeedbackTask.RANKING:
        ranking = value.get("ranking") or []
        return {(): ranking[0]} if ranking else {}
    if task == FeedbackTask.RATING:
        found = {}
        for index, row in enumerate(value.get("ratings") or []):
            for criterion in criteria:
                if row and row.get(criterion) is not None:
                    found[(index, criterion)] = row[criterion]
        return found
    return {}


def _chosen(task: str, value: dict) -> Any:
    """The response a judgment chose, for position bias (None: no choice)."""
    if task == FeedbackTask.PAIRWISE:
        return value.get("choice")
    if task == FeedbackTask.RANKING:
        ranking = value.get("ranking") or []
        return ranking[0] if ranking else None
    return None


def _majority(labels: list[Hashable]) -> Hashable | None:
    """The label more than half of ``labels`` agree on, else None."""
    if not labels:
        return None
    label, count = Counter(labels).most_common(1)[0]
    return label if count * 2 > len(labels) else None


def _comparisons(task: str, value: dict, models: list) -> list[tuple]:
    """``(model_a, model_b, result)`` comparisons one judgment value makes between the item's
    responses (``models[i]``: the model key of response i, None if unknown)."""
    if task == FeedbackTask.PAIRWISE and len(models) == 2:
        return [(models[0], models[1], value.get("choice"))]
    if task == FeedbackTask.RANKING:
        ranking = value.get("ranking") or []
        return [
            (models[ranking[i]], models[ranking[j]], "a")
            for i in range(len(ranking))
            for j in range(i + 1, len(ranking))
        ]
    if task == FeedbackTask.RATING:
        ratings = value.get("ratings") or []
        means = [statistics.fmean(row.values()) if row else None for row in ratings]
        found = []
        for i in range(len(means)):
            for j in range(i + 1, len(means)):
                if means[i] is None or means[j] is None:
                    continue
                result = "a" if means[i] > means[j] else "b" if means[j] > means[i] else "tie"
                found.append((models[i], models[j], result))
        return found
    return []


def _model_key(response: dict) -> tuple[str | None, dict | None]:
    version = response.get("model_version_id")
    label = response.get("label") or ""
    if version is not None:
        return f"version:{version}", {"label": label or f"version {version}", "version": version}
    if label:
        return f"label:{label}", {"label": label, "version": None}
    return None, None


def _rater_row(user) -> dict[str, Any]:
    return {"id": user.pk, "username": user.get_username()}


def campaign_stats(campaign: Campaign, *, n_boot: int = STATS_BOOT, seed: int = 0) -> dict:
    """Everything the manager's view shows about ``campaign`` (see the module docstring), as
    plain JSON-ready data."""
    from evaluation.metrics import agreement  # numpy: kept out of the web process's start-up

    task = campaign.task
    criteria = list(campaign.criteria or []) or ["overall"]
    boot = {"n_boot": n_boot, "seed": seed}

    raters = [
        row.user for row in CampaignRater.objects.filter(campaign=campaign).select_related("user")
    ]
    ai_raters = list(
        AIRater.objects.filter(campaign=campaign).only("pk", "name", "use_for_training")
    )
    items = list(
        Item.objects.filter(campaign=campaign)
        .order_by("index")
        .values("pk", "index", "responses", "adjudicated")
    )
    statuses = (
        Assignment.objects.filter(item__campaign=campaign)
        .order_by()
        .values("rater_id", "ai_rater_id", "status")
        .annotate(n=Count("pk"))
    )
    judgments = list(
        Judgment.objects.filter(item__campaign=campaign, withdrawn_at__isnull=True)
        .order_by("item_id", "id")
        .values("item_id", "rater_id", "ai_rater_id", "value", "seconds_spent", "assignment__order")
    )

    # --- progress --------------------------------------------------------------------------
    counts: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for row in statuses:
        who = ("human", row["rater_id"]) if row["rater_id"] else ("ai", row["ai_rater_id"])
        counts[who][row["status"]] += row["n"]
    seconds: dict[int, list[float]] = defaultdict(list)
    submitted: Counter = Counter()
    for j in judgments:
        if j["rater_id"]:
            submitted[j["rater_id"]] += 1
            if j["seconds_spent"] is not None:
                seconds[j["rater_id"]].append(j["seconds_spent"])
    progress = []
    for user in raters:
        c = counts[("human", user.pk)]
        progress.append(
            {
                **_rater_row(user),
                # Assignments given and not expired (in hand, answered or skipped).
                "assigned": c[AssignmentStatus.ACTIVE]
                + c[AssignmentStatus.SUBMITTED]
                + c[AssignmentStatus.SKIPPED],
                "active": c[AssignmentStatus.ACTIVE],
                "submitted": submitted[user.pk],
                "skipped": c[AssignmentStatus.SKIPPED],
                "expired": c[AssignmentStatus.EXPIRED],
                "median_seconds": statistics.median(seconds[user.pk]) if seconds[user.pk] else None,
            }
        )
    all_seconds = [s for values in seconds.values() for s in values]
    human_judgments = [j for j in judgments if j["rater_id"]]
    per_item_human = Counter(j["item_id"] for j in human_judgments)
    target = len(items) * campaign.overlap
    overall = {
        "items": len(items),
        "items_complete": sum(
            1 for item in items if per_item_human[item["pk"]] >= campaign.overlap
        ),
        "judgments": len(human_judgments),
        "target": target,
        "fraction": min(1.0, len(human_judgments) / target) if target else None,
        "median_seconds": statistics.median(all_seconds) if all_seconds else None,
        "ai_judgments": len(judgments) - len(human_judgments),
    }

    # --- labels per unit --------------------------------------------------------------------
    item_by_pk = {item["pk"]: item for item in items}
    human: dict[Unit, dict[int, Hashable]] = defaultdict(dict)  # unit -> rater -> label
    machine: dict[int, dict[Unit, Hashable]] = defaultdict(dict)  # AI rater -> unit -> label
    for j in judgments:
        for unit, label in _labels(task, j["value"] or {}, criteria).items():
            key = (j["item_id"], *unit)
            if j["rater_id"]:
                human[key][j["rater_id"]] = label
            else:
                machine[j["ai_rater_id"]][key] = label
    adjudicated: dict[Unit, Hashable] = {}
    for item in items:
        if item["adjudicated"]:
            for unit, label in _labels(
                task, item["adjudicated"].get("value") or {}, criteria
            ).items():
                adjudicated[(item["pk"], *unit)] = label

    def item_label(unit: Unit, exclude: int | None = None) -> Hashable | None:
        if unit in adjudicated:
            return adjudicated[unit]
        return _majority([v for r, v in human.get(unit, {}).items() if r != exclude])

    # --- agreement among humans -------------------------------------------------------------
    label_groups: list[tuple[str, str, list[Unit]]] = []
    if task in (FeedbackTask.PAIRWISE, FeedbackTask.RANKING):
        name = "choice" if task == FeedbackTask.PAIRWISE else "top choice"
        label_groups.append((name, "nominal", sorted(human)))
    elif task == FeedbackTask.RATING:
        for criterion in criteria:
            units = sorted(u for u in human if u[2] == criterion)
            label_groups.append((criterion, "ordinal", units))
    rated_by = sorted({r for labels in human.values() for r in labels})
    agreement_blocks = []
    for name, level, units in label_groups:
        block: dict[str, Any] = {"label": name, "level": level, "raters": len(rated_by)}
        rows = [list(human[u].values()) for u in units]
        if len(rated_by) == 2:
            first, second = rated_by
            block["cohen_kappa"] = agreement.cohen_kappa(
                [human[u].get(first) for u in units], [human[u].get(second) for u in units], **boot
            )
            block["fleiss_kappa"] = None
        else:
            block["cohen_kappa"] = None
            block["fleiss_kappa"] = agreement.fleiss_kappa(ratings=rows, **boot)
        block["krippendorff_alpha"] = agreement.krippendorff_alpha(rows, level=level, **boot)
        agreement_blocks.append(block)
    if task == FeedbackTask.CORRECTION:
        agreement_reason = "corrections are free text: no agreement statistic applies"
    elif len(rated_by) < 2:
        agreement_reason = "fewer than two raters have judged items"
    else:
        agreement_reason = None

    # --- each rater against the others; outliers --------------------------------------------
    raters_agreement = []
    for rater in rated_by:
        matches = shared = 0
        for labels in human.values():
            if rater not in labels:
                continue
            for other, label in labels.items():
                if other != rater:
                    shared += 1
                    matches += int(label == labels[rater])
        raters_agreement.append(
            {"id": rater, "pairs": shared, "agreement": matches / shared if shared else None}
        )
    measured = [r["agreement"] for r in raters_agreement if r["pairs"] >= MIN_SHARED_FOR_OUTLIER]
    median = statistics.median(measured) if len(measured) >= 3 else None
    names = {user.pk: user.get_username() for user in raters}
    for row in raters_agreement:
        row["username"] = names.get(row["id"], "")
        # Alpha of the others alone, beside everyone's: a rater whose leaving raises it much
        # pulls agreement down (averaged over the labels, e.g. a rating's criteria).
        without = [
            agreement.krippendorff_alpha(
                [[v for r, v in human[u].items() if r != row["id"]] for u in units],
                level=level,
                n_boot=0,
            )["value"]
            for _, level, units in label_groups
        ]
        without = [v for v in without if v is not None]
        row["alpha_without"] = statistics.fmean(without) if without else None
        row["flagged"] = bool(
            median is not None
            and row["pairs"] >= MIN_SHARED_FOR_OUTLIER
            and row["agreement"] < median - OUTLIER_MARGIN
        )
    outliers = {"median": median, "margin": OUTLIER_MARGIN, "raters": raters_agreement}

    # --- AI raters against the humans -------------------------------------------------------
    def versus(pairs: list[tuple[Hashable, Hashable]]) -> dict[str, Any]:
        ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
        matches = sum(1 for a, b in pairs if a == b)
        return {
            "n": len(pairs),
            "agreement": agreement.proportion(matches, len(pairs)),
            "cohen_kappa": agreement.cohen_kappa(ours, theirs, **boot),
        }

    baseline_pairs = []
    for labels in human.values():
        for rater, label in labels.items():
            others = _majority([v for r, v in labels.items() if r != rater])
            if others is not None:
                baseline_pairs.append((label, others))
    humans_baseline = versus(baseline_pairs)
    ai_judged = Counter(j["ai_rater_id"] for j in judgments if j["ai_rater_id"])
    ai_rows = []
    for ai in ai_raters:
        pairs = []
        for unit, label in machine.get(ai.pk, {}).items():
            reference = item_label(unit)
            if reference is not None:
                pairs.append((label, reference))
        ai_rows.append(
            {
                "id": ai.pk,
                "name": ai.name,
                "judged": ai_judged[ai.pk],
                "use_for_training": ai.use_for_training,
                **versus(pairs),
            }
        )

    # --- position bias ----------------------------------------------------------------------
    if task in (FeedbackTask.PAIRWISE, FeedbackTask.RANKING):
        by_rater: dict[Any, list] = defaultdict(list)
        for j in judgments:
            who = ("human", j["rater_id"]) if j["rater_id"] else ("ai", j["ai_rater_id"])
            by_rater[who].append((j["assignment__order"] or [], _chosen(task, j["value"] or {})))
        position = {
            "humans": agreement.position_bias(
                [x for (kind, _), rows in by_rater.items() if kind == "human" for x in rows]
            ),
            "raters": [
                {**_rater_row(user), **agreement.position_bias(by_rater[("human", user.pk)])}
                for user in raters
                if by_rater[("human", user.pk)]
            ],
            "ai_raters": [
                {"id": ai.pk, "name": ai.name, **agreement.position_bias(by_rater[("ai", ai.pk)])}
                for ai in ai_raters
                if by_rater[("ai", ai.pk)]
            ],
            "reason": None,
        }
    else:
        position = {
            "humans": None,
            "raters": [],
            "ai_raters": [],
            "reason": "position bias is measured on tasks that choose a response",
        }

    # --- items in disagreement --------------------------------------------------------------
    disagreements = []
    per_item_units: dict[int, list[Unit]] = defaultdict(list)
    for unit in human:
        per_item_units[unit[0]].append(unit)
    for item in items:
        reasons = []
        for unit in sorted(per_item_units.get(item["pk"], [])):
            labels = list(human[unit].values())
            if len(labels) < 2:
                continue
            if task == FeedbackTask.RATING:
                spread = max(labels) - min(labels)
                if spread >= RATING_SPREAD:
                    reasons.append(f"response {unit[1] + 1} {unit[2]}: scores spread by {spread}")
            elif _majority(labels) is None:
                reasons.append("no majority")
        if reasons:
            counted = Counter(
                str(label) for unit in per_item_units[item["pk"]] for label in human[unit].values()
            )
            disagreements.append(
                {
                    "item": item["pk"],
                    "index": item["index"],
                    "reasons": reasons,
                    "labels": dict(counted) if task != FeedbackTask.RATING else None,
                    "adjudicated": item["adjudicated"] is not None,
                    "adjudicated_value": (item["adjudicated"] or {}).get("value"),
                }
            )
    disagreement = {
        "total": len(disagreements),
        "open": sum(1 for d in disagreements if not d["adjudicated"]),
        "items": disagreements[:MAX_DISAGREEMENTS],
    }

    # --- models: win rates and Bradley-Terry ------------------------------------------------
    model_info: dict[str, dict] = {}
    comparisons = []
    for j in human_judgments:
        item = item_by_pk.get(j["item_id"])
        if item is None:
            continue
        keys = []
        for response in item["responses"] or []:
            key, info = _model_key(response if isinstance(response, dict) else {})
            keys.append(key)
            if key is not None:
                model_info.setdefault(key, info)
        value = (item["adjudicated"] or {}).get("value") or j["value"] or {}
        comparisons.extend(c for c in _comparisons(task, value, keys) if None not in c[:2])
    if len({m for c in comparisons for m in c[:2]}) >= 2:

        def named(rows: list[dict], *fields: str) -> list[dict]:
            for row in rows:
                for field in fields:
                    info = model_info[row[field]]
                    row[field] = info["label"]
                    row[f"{field}_version_id"] = info["version"]
            return rows

        wins = agreement.win_rates(comparisons)
        bt = agreement.bradley_terry(comparisons, **boot)
        models = {
            "win_rates": named(wins["models"], "model"),
            "head_to_head": named(wins["head_to_head"], "model", "opponent"),
            "bradley_terry": {**bt, "models": named(bt["models"], "model")},
            "comparisons": wins["n"],
            "reason": None,
        }
        models["bradley_terry"]["ranking"] = [row["model"] for row in bt["models"]]
    else:
        models = {
            "win_rates": [],
            "head_to_head": [],
            "bradley_terry": None,
            "comparisons": len(comparisons),
            "reason": "the items' responses do not name two or more models",
        }

    return {
        "campaign": {"id": campaign.pk, "name": campaign.name, "task": task},
        "progress": {"raters": progress, "overall": overall},
        "agreement": {"labels": agreement_blocks, "reason": agreement_reason},
        "raters_agreement": outliers,
        "ai_raters": {"humans": humans_baseline, "raters": ai_rows},
        "position_bias": position,
        "disagreements": disagreement,
        "models": models,
    }
