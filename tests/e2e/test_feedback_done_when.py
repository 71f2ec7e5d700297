"""Issue 15's "done when", as one story: a manager makes a blind pairwise campaign of two model
versions' generations in the browser (the generation job runs on a real worker); two raters
label its items with the keyboard only; an AI rater (an OpenAI-compatible inference engine
serving a tiny judge model) labels the same items through its job; the manager reads agreement
and win rates on the campaign page, approves the AI rater's labels for training, exports a
preference dataset (a job), launches DPO on it from the training page (a job), finds the new
version in the registry, sees the goal gate block it until an evaluation (a job) measures it,
and promotes it."""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import expect

from datasets_app import services as data_services
from datasets_app.models import DatasetVersion
from evaluation.feedback.models import AIRatingJob, Assignment, FeedbackExport, GenerationJob
from evaluation.models import EvaluationRun
from llmhub.jobs import wait_until
from projects.services import goal_create
from serving.models import EndpointStage
from serving.services import endpoint_create
from tests.e2e.test_data_stage import _login, _shot
from tests.e2e.test_rater_screen import _login_by_keyboard
from tests.evaluation.feedback.builders import extra_raters
from tests.serving import conftest as serving_fixtures
from tests.serving.conftest import plain_engine, register_version
from training.models import TrainingJob

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]
tiny_lm_dir = serving_fixtures.tiny_lm_dir

PROMPTS = [
    "How do I reset my password?",
    "Where can I see my invoices?",
    "Can I change the e-mail of my account?",
    "How do I close my account?",
]
JUDGE_KEY = "judge-secret-key"
# Which version each of the two raters prefers, item by item (by the item's index: "B" the
# second version, "A" the first): they agree on items 0, 1 and 3 and disagree on item 2 (the AI
# rater's label decides it in the export). By hand: Cohen's kappa (0.75 - 0.5) / (1 - 0.5) =
# 0.5; the second version wins 5 of the 8 human comparisons.
PREFERS = ("BBBA", "BBAA")


def _other_weights(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny causal LM with other random weights (so the two versions answer
    differently), with the same tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    out = tmp_path / "other-weights"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out)
    return out


def _judge_dir(tmp_path: Path) -> Path:
    """A one-layer GPT-2 that answers "B" to any prompt, then stops: a judge that always
    prefers the response shown second. The blocks add nothing (zero projections), positions
    add nothing, so the logits depend on the current token only: the embedding of "B" is the
    negative of every other token's, and the untied head maps "not B" to "B" and "B" to the end
    token. A random tiny model's answers name no response (test_ai_raters.py counts them)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.serving.engine.models import TEXTS
    from tests.tiny_tokenizers import byte_level_tokenizer

    tokenizer = byte_level_tokenizer(TEXTS, vocab_size=360)
    b, eos = tokenizer.convert_tokens_to_ids("B"), tokenizer.eos_token_id
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=2048,  # the default judging prompt and 256 answer tokens fit
            n_embd=32,
            n_layer=1,
            n_head=2,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for norm in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2):
            norm.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        embeddings = model.transformer.wte.weight
        embeddings[:, 0] = 1.0
        embeddings[b, 0] = -1.0
        # What the final layer norm makes of (1, 0, ..., 0); of "B" it makes the negative.
        normed = torch.nn.functional.layer_norm(embeddings[:1].clone(), (32,))[0]
        model.lm_head.weight[b] = normed
        model.lm_head.weight[eos] = -normed
    out = tmp_path / "judge"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _evaluation_data(world) -> DatasetVersion:
    """Prompts with reference answers, all in a ``test`` split: what the goal is measured on."""
    table = pa.table(
        {
            "prompt": PROMPTS,
            "target": ["Open Settings.", "Under Billing.", "Yes, in Profile.", "Ask support."],
        }
    )
    dataset = data_services.dataset_create(
        actor=world.users["engineer"], project=world.project, name="support answers"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.parquet"
        pq.write_table(table, path)
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        return data_services.version_register(
            dataset=dataset,
            local_path=path,
            sha256=sha256,
            row_count=table.num_rows,
            size_bytes=path.stat().st_size,
            schema=[{"name": f.name, "type": str(f.type)} for f in table.schema],
            column_roles={"prompt": "prompt", "target": "target"},
            recipe={"kind": "upload", "filename": "answers.parquet"},
            parent=None,
            actor=world.users["engineer"],
            splits=[{"name": "test", "path": path, "sha256": sha256, "rows": table.num_rows}],
        )


def _ended(model, pk: int, timeout: float, worker) -> object:
    """The job row once it has ended; the worker's log in the message if it did not."""
    assert wait_until(
        lambda: model.objects.get(pk=pk).is_terminal, timeout=timeout, interval=0.5
    ), worker.log()[-4000:]
    job = model.objects.get(pk=pk)
    assert job.status == "succeeded", (job.error, worker.log()[-4000:])
    return job


def _rate_by_keyboard(context, campaign, rater, prefers: str, preferred, other) -> None:
    """``rater`` labels every item of ``campaign`` in a browser of their own, keyboard only:
    "1" or "2" for the response of the version they prefer on that item (``prefers[index]``:
    "B" for ``preferred``, "A" for ``other``), wherever the random order put it; then Enter."""
    page = context.new_page()
    page.set_default_timeout(15_000)
    _login_by_keyboard(page, rater)
    page.goto(f"/feedback/campaigns/{campaign.pk}/rate/")
    total = len(prefers)
    for done in range(total):
        expect(page.locator("#progress-text")).to_have_text(f"{done} of {total} judged")
        assignment = Assignment.objects.select_related("item").get(
            pk=page.locator("#item").get_attribute("data-assignment")
        )
        item = assignment.item
        wanted = preferred if prefers[item.index] == "B" else other
        index = next(i for i, r in enumerate(item.responses) if r["model_version_id"] == wanted.pk)
        page.keyboard.press("1" if assignment.order[0] == index else "2")
        page.keyboard.press("Enter")
    expect(page.locator("#done")).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text(f"{total} of {total} judged")
    # Blind: the screen named neither version.
    html = page.content()
    assert str(preferred) not in html and str(other) not in html
    page.close()


@pytest.fixture
def judge_url(tmp_path):
    """The base URL of an OpenAI-compatible inference engine (no database: what an outside
    service is to LLMHub) serving the judge, with the key ``JUDGE_KEY``."""
    http, state, _sink = plain_engine(_judge_dir(tmp_path), slug="judge", api_key=JUDGE_KEY)
    yield f"{http.url}/v1"
    http.stop()
    state.close()


def test_raters_and_an_ai_rater_label_and_their_labels_train_the_next_version(
    page, browser_instance, live_server, world, tiny_lm_dir, judge_url, celery_worker, tmp_path
) -> None:
    started = time.monotonic()
    worker = celery_worker
    manager = world.users["manager"]
    project = world.project
    project.task_type = "generation"
    project.save()
    # Setup the issue does not name: two registered versions, a goal, data to measure it on,
    # the raters, an endpoint to promote to.
    first = register_version(project, tiny_lm_dir, actor=manager, name="support-bot")
    second = register_version(
        project, _other_weights(tiny_lm_dir, tmp_path), actor=manager, name="support-bot"
    )
    goal = goal_create(
        actor=manager, project=project, metric="perplexity", target=1e9, split="test"
    )
    answers = _evaluation_data(world)
    raters = extra_raters(world, 2)
    endpoint = endpoint_create(
        actor=manager, project=project, name="Support bot", stage=EndpointStage.PRODUCTION
    )

    # 1. The manager makes the campaign: both versions answer the same prompts (a job).
    _login(page, manager)
    page.goto(f"/projects/{project.pk}/feedback/")
    page.fill("#campaign_name", "v1 against v2")
    page.select_option("#campaign_task", "pairwise")
    page.select_option("#campaign_source", "versions")
    page.select_option("#campaign_versions", [str(first.pk), str(second.pk)])
    page.fill("#campaign_prompts", "\n".join(PROMPTS))
    page.fill("#campaign_max_tokens", "8")
    for rater in raters:
        page.check(f"#new-campaign input[name=raters][value='{rater.pk}']")
    page.fill("#campaign_overlap", "2")
    expect(page.locator("#campaign_blind")).to_be_checked()
    page.click("#new-campaign button:has-text('Create campaign')")
    page.wait_for_url("**/feedback/campaigns/*/")
    generation = GenerationJob.objects.get(campaign__project=project)
    campaign = generation.campaign
    _ended(GenerationJob, generation.pk, 120, worker)
    assert campaign.items.count() == len(PROMPTS)
    page.goto(f"/feedback/campaigns/{campaign.pk}/")
    page.click("#launch")
    expect(page.locator("#campaign-status")).to_have_text("Active")

    # 2. Two raters label every item in their own browsers, with the keyboard only.
    for rater, prefers in zip(raters, PREFERS, strict=True):
        context = browser_instance.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}
        )
        try:
            _rate_by_keyboard(context, campaign, rater, prefers, second, first)
        finally:
            context.close()

    # 3. An AI rater, a model behind an OpenAI-compatible URL, labels the same items (a job).
    page.goto(f"/feedback/campaigns/{campaign.pk}/")
    page.click("#new-ai-rater summary")
    page.fill("#airater_name", "tiny judge")
    page.check("#new-ai-rater input[name=via][value=url]")
    page.fill("#airater_base_url", judge_url)
    page.fill("#airater_model", "judge")
    page.fill("#airater_api_key", JUDGE_KEY)
    page.click("#new-ai-rater button:has-text('Add AI rater')")
    expect(page.locator("ul.messages")).to_contain_text("AI rater tiny judge added")
    ai_rater = campaign.ai_raters.get()
    page.click(f"[data-ai-rater='{ai_rater.pk}'] button:has-text('Run')")
    expect(page.locator("ul.messages")).to_contain_text("tiny judge is labeling the items")
    rating = _ended(AIRatingJob, AIRatingJob.objects.get(ai_rater=ai_rater).pk, 120, worker)
    assert rating.judged == len(PROMPTS), rating.progress_message

    # 4. The manager reads agreement and win rates (PREFERS says what they are by hand).
    page.goto(f"/feedback/campaigns/{campaign.pk}/")
    expect(page.locator("#overall")).to_contain_text("8 / 8")
    expect(page.locator("#rater-progress tbody tr")).to_have_count(2)
    kappa = page.locator("#agreement tbody tr").first
    expect(kappa).to_contain_text("2 raters")
    expect(kappa.locator("td").nth(1)).to_contain_text("0.5")  # Cohen's kappa
    wins = page.locator("#win-rates tbody")
    expect(wins.locator(f"tr[data-model='{second}'] td").nth(1)).to_have_text("5")
    expect(wins.locator(f"tr[data-model='{second}'] td").nth(4)).to_contain_text("0.625")
    expect(wins.locator(f"tr[data-model='{first}'] td").nth(1)).to_have_text("3")
    expect(page.locator("#disagreements")).to_contain_text("1 open of 1")
    ai_row = page.locator(f"[data-ai-rater='{ai_rater.pk}']")
    expect(ai_row.locator("td").nth(1)).to_have_text("4")  # judged
    # Its agreement with the humans' majority (items 0, 1 and 3), beside the humans' own.
    expect(ai_row.locator("td").nth(2)).to_contain_text(re.compile(r"\d\.\d{3}"))
    expect(page.locator("#ai-raters p").first).to_contain_text(re.compile(r"\d\.\d{3}"))
    _shot(page, "feedback-campaign.png")

    # 5. Its labels may train (its agreement recorded), and the export includes them (a job).
    page.once("dialog", lambda dialog: dialog.accept())
    ai_row.locator("button:has-text('Approve for training')").click()
    expect(ai_row).to_contain_text("used for training")
    page.select_option("#export_format", "preference")
    page.check("#export_include_ai")
    page.click("#export-form button:has-text('Export as a dataset version')")
    expect(page.locator("ul.messages")).to_contain_text("Export started")
    export = _ended(FeedbackExport, FeedbackExport.objects.get(campaign=campaign).pk, 120, worker)
    preference = export.dataset_version
    assert export.rows == 4 and preference is not None  # the AI rater decided item 2
    assert preference.column_roles == {
        "prompt": "prompt",
        "chosen": "chosen",
        "rejected": "rejected",
    }
    page.goto(f"/feedback/campaigns/{campaign.pk}/")
    expect(page.locator(f"[data-export='{export.pk}']")).to_contain_text(str(preference))

    # 6. DPO of the preferred version on the exported pairs, launched from the training page.
    page.goto(f"/projects/{project.pk}/train/new/")
    page.fill("#id_name", "support-bot dpo")
    page.select_option("#id_kind", "dpo")
    page.select_option("#id_base_source", "model_version")
    page.select_option("#id_base_model_version", str(second.pk))
    page.select_option("#id_train_version", str(preference.pk))
    page.select_option("#id_train_split", "")
    page.select_option("#id_eval_split", "")
    for name, value in {
        "max_steps": "1",
        "batch_size": "2",
        "max_seq_length": "64",
        "logging_steps": "1",
    }.items():
        page.fill(f"#id_hp_{name}", value)
    page.click("button:has-text('Launch on the gpu queue')")
    page.wait_for_url("**/training-jobs/*/")
    dpo = _ended(TrainingJob, TrainingJob.objects.get(kind="dpo").pk, 300, worker)
    tuned = dpo.model_version
    assert tuned.task_kind == "dpo" and tuned.parent_id == second.pk
    assert tuned.dataset_version_id == preference.pk
    assert dpo.global_step == 1 and dpo.metric_points.filter(name="rewards/margins").exists()

    # 7. The new version is in the registry.
    page.goto(f"/projects/{project.pk}/train/")
    expect(page.locator("#registry")).to_contain_text(str(tuned))

    # 8. The goal gate holds it back until an evaluation measures it.
    page.goto(f"/deploy/endpoints/{endpoint.pk}/")
    blockers = page.locator("#promote [data-gate-blockers] li")
    page.select_option("#promote_version", str(tuned.pk))
    expect(blockers).to_have_text([f"No evaluation of {tuned} measures Perplexity on test."])
    page.click("#promote button:has-text('Promote')")
    expect(blockers).to_have_count(1)
    endpoint.refresh_from_db()
    assert endpoint.version is None

    # 9. Evaluated on the goal's split (a job): the goal is met.
    page.goto(f"/projects/{project.pk}/evaluate/")
    page.select_option("#id_model_version", str(tuned.pk))
    page.select_option("#id_dataset_version", str(answers.pk))
    page.select_option("#id_split", "test")
    page.check("input[name=metrics][value=perplexity]")
    with page.expect_navigation():
        page.click("button:has-text('Evaluate')")
    run = _ended(EvaluationRun, EvaluationRun.objects.get(model_version=tuned).pk, 180, worker)
    assert run.value("perplexity") is not None
    goal.refresh_from_db()
    assert goal.status == "met", (goal.measured_value, goal.measured_source)

    # 10. Now it passes the gate and is promoted to production.
    page.goto(f"/deploy/endpoints/{endpoint.pk}/")
    page.select_option("#promote_version", str(tuned.pk))
    expect(blockers).to_have_count(0)
    page.click("#promote button:has-text('Promote')")
    expect(page.locator("ul.messages")).to_contain_text(f"{tuned} now serves Support bot.")
    expect(page.locator("#primary-version")).to_contain_text(str(tuned))
    endpoint.refresh_from_db()
    tuned.refresh_from_db()
    assert endpoint.version_id == tuned.pk and tuned.stage == "production"
    _shot(page, "feedback-promoted.png")
    print(f"Feedback done-when: {time.monotonic() - started:.1f} s")
