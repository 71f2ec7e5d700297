"""The drift statistics of the Monitor stage (serving/monitoring/runtime): each against a value
worked out by hand on tiny inputs, planted shifts flagged and same-distribution windows not
(over several seeds), the config's one validator, data that is missing, and the runtime's
purity (no Django, no Celery)."""

from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest

from serving.monitoring.runtime.config import DriftConfig, DriftConfigError, settings_schema
from serving.monitoring.runtime.drift import (
    PSI_PSEUDOCOUNT,
    Sample,
    auc_noise_floor,
    binned_psi,
    centroid_drift,
    completion_drift,
    compute_drift,
    domain_classifier_drift,
    is_refusal,
    label_drift,
    length_drift,
    psi_from_counts,
    psi_noise_floor,
    token_drift,
)

SEEDS = range(5)
# Tiny inputs: every statistic is computed from the first row on.
TINY = DriftConfig(min_reference_rows=1, min_current_rows=1)


def _stat(check, name):
    return next(s for s in check.statistics if s.name == name)


def _psi_by_hand(ref_counts, cur_counts):
    a = PSI_PSEUDOCOUNT
    r_total, c_total = sum(ref_counts) + a * len(ref_counts), sum(cur_counts) + a * len(cur_counts)
    total = 0.0
    for r, c in zip(ref_counts, cur_counts, strict=True):
        r_share, c_share = (r + a) / r_total, (c + a) / c_total
        total += (c_share - r_share) * math.log(c_share / r_share)
    return total


# --- each statistic by hand ----------------------------------------------------------------


def test_psi_of_counts_smooths_an_empty_bin() -> None:
    value, terms = psi_from_counts(np.array([10, 0]), np.array([5, 5]))
    # shares: reference 10.5/11, 0.5/11; current 5.5/11, 5.5/11
    expected = (5.5 / 11 - 10.5 / 11) * math.log(5.5 / 10.5) + (5 / 11) * math.log(5.5 / 0.5)
    assert value == pytest.approx(expected)
    assert terms.sum() == pytest.approx(expected) and (terms >= 0).all()
    assert psi_from_counts(np.array([3, 7]), np.array([3, 7]))[0] == pytest.approx(0.0)


def test_length_psi_uses_the_reference_quantiles_and_bins_beyond_its_range() -> None:
    value, bins, k = binned_psi([1, 2, 3, 4], [3, 4, 5, 6], bins=2)
    # edges: just below 1, the median 2.5, the maximum 4 -> bins <1, [1, 2.5], (2.5, 4], >4
    assert k == 4
    by_name = {b["bin"]: b for b in bins}
    assert set(by_name) == {"< 1", "[1, 2.5]", "(2.5, 4]", "> 4"}
    assert by_name["> 4"]["current_share"] == 0.5 and by_name["> 4"]["reference_share"] == 0
    assert by_name["[1, 2.5]"]["reference_share"] == 0.5
    assert value == pytest.approx(_psi_by_hand([0, 2, 2, 0], [0, 0, 2, 2]))
    assert bins[0]["contribution"] >= bins[-1]["contribution"]  # largest first
    # A constant reference still tells a shift down from a shift up.
    assert binned_psi([5] * 10, [2] * 10, bins=10)[0] == pytest.approx(
        _psi_by_hand([0, 10, 0], [10, 0, 0])
    )


def test_length_drift_ks_wasserstein_and_psi_by_hand() -> None:
    check = length_drift(
        [1, 2, 3, 4], [3, 4, 5, 6], DriftConfig(**{**TINY.to_dict(), "length_bins": 2})
    )
    ks = _stat(check, "prompt_length_ks_p_value")
    assert ks.details["ks_statistic"] == pytest.approx(0.5)  # the ECDFs differ most at x = 2
    assert ks.rule == "<" and ks.threshold == 0.001 and not ks.drifted
    # Every value moved by 2; the reference's sd is sqrt(1.25).
    wasserstein = _stat(check, "prompt_length_wasserstein")
    assert wasserstein.value == pytest.approx(2 / math.sqrt(1.25))
    psi = _stat(check, "prompt_length_psi")
    assert psi.value == pytest.approx(_psi_by_hand([0, 2, 2, 0], [0, 0, 2, 2]))
    # Four rows a side: the noise floor is far above what four rows can show.
    assert psi.noise_floor > psi.value and not psi.drifted
    # A constant-length reference is scaled by one token, not divided by zero.
    assert _stat(length_drift([3, 3], [5, 5], TINY), "prompt_length_wasserstein").value == 2


def test_token_js_distance_and_top_tokens_by_hand() -> None:
    check = token_drift([["a", "b"]], [["a", "c"]], TINY)
    js = _stat(check, "token_js_distance")
    # p = (.5, .5, 0), q = (.5, 0, .5), m = (.5, .25, .25): JSD = 0.5 bit.
    assert js.value == pytest.approx(math.sqrt(0.5))
    from scipy.spatial.distance import jensenshannon

    assert js.value == pytest.approx(jensenshannon([0.5, 0.5, 0], [0.5, 0, 0.5], base=2))
    top = {row["token"]: row for row in check.top}
    assert top["b"]["contribution"] == pytest.approx(0.25)
    assert top["c"]["contribution"] == pytest.approx(0.25)
    assert top["a"]["contribution"] == pytest.approx(0.0)
    assert check.notes  # no unknown id given: the rate is left out, and said so
    assert [s.name for s in check.statistics] == ["token_js_distance"]


def test_unknown_token_rate_by_id_or_by_predicate() -> None:
    ref, cur = [[7, 8, 7, 0]], [[0, 0, 7, 8]]  # 0 is the unknown id: 1/4 then 2/4
    by_id = _stat(token_drift(ref, cur, TINY, unknown=0), "token_oov_rate_increase")
    assert by_id.value == pytest.approx(0.25)
    assert by_id.details == {"reference_rate": 0.25, "current_rate": 0.5}
    by_predicate = token_drift(
        ref, cur, TINY, unknown=lambda t: t == 0, token_label=lambda t: f"#{t}"
    )
    assert _stat(by_predicate, "token_oov_rate_increase").value == pytest.approx(0.25)
    assert {row["token"] for row in by_predicate.top} == {"#0", "#7", "#8"}


def test_domain_classifier_separates_disjoint_vocabularies() -> None:
    ref = [f"alpha beta gamma {i % 7}" for i in range(40)]
    cur = [f"omega sigma delta {i % 7}" for i in range(40)]
    check = domain_classifier_drift(ref, cur, TINY)
    auc = _stat(check, "classifier_auc")
    assert auc.value == pytest.approx(1.0) and auc.drifted
    assert {row["side"] for row in check.top} == {"current", "reference"}
    assert all("omega" in row["text"] for row in check.top if row["side"] == "current")
    # The same texts on both sides: nothing to tell apart.
    same = _stat(domain_classifier_drift(ref, list(ref), TINY), "classifier_auc")
    assert same.value < 0.6 and not same.drifted


def test_auc_and_psi_noise_floors_by_hand() -> None:
    z = 3.090232306167813  # the normal quantile of 1 - 0.001
    assert auc_noise_floor(500, 500, DriftConfig()) == pytest.approx(
        0.5 + z * math.sqrt(1001 / (12 * 500 * 500))
    )
    # 500 rows a side is where noise reaches the default AUC threshold (0.55) by itself.
    assert 0.55 < auc_noise_floor(500, 500, DriftConfig()) < 0.56
    from scipy.stats import chi2

    assert psi_noise_floor(10, 100, 100, DriftConfig()) == pytest.approx(chi2.isf(0.001, 9) / 50)


def test_centroid_cosine_distance_by_hand() -> None:
    ref = np.array([[1.0, 0.0], [2.0, 0.0]])
    cur = np.array([[1.0, 1.0], [3.0, 3.0]])
    check = centroid_drift(ref, cur, TINY, current_texts=["x", "y"], reference_texts=["p", "q"])
    assert _stat(check, "centroid_cosine_distance").value == pytest.approx(1 - 1 / math.sqrt(2))
    assert {row["side"] for row in check.top} == {"current", "reference"}
    with pytest.raises(ValueError, match="dimensions"):
        centroid_drift(ref, np.ones((2, 3)), TINY)


def test_label_chi_square_psi_and_confidence_by_hand() -> None:
    ref, cur = ["a"] * 6 + ["b"] * 4, ["a"] * 4 + ["b"] * 6
    check = label_drift(
        ref, cur, TINY, reference_confidences=[0.9, 0.8] * 5, current_confidences=[0.6, 0.7] * 5
    )
    chi = _stat(check, "label_chi2_p_value")
    # Expected 5 in every cell: chi2 = 4 * 1/5 = 0.8 on 1 degree of freedom.
    assert chi.details["chi2"] == pytest.approx(0.8)
    assert chi.value == pytest.approx(math.erfc(math.sqrt(0.8 / 2)))
    assert _stat(check, "label_psi").value == pytest.approx(_psi_by_hand([6, 4], [4, 6]))
    drop = _stat(check, "confidence_drop")
    assert drop.value == pytest.approx(0.2) and drop.details["current_mean"] == pytest.approx(0.65)
    assert drop.drifted  # 0.2 >= 0.05, and ten rows of such steady confidences are no noise
    without = label_drift(ref, cur, TINY)
    assert "confidence_drop" not in {s.name for s in without.statistics} and without.notes


def test_completion_rates_and_refusal_phrases() -> None:
    ref = ["Paris.", "I'm sorry, I can't help with that.", "42", "Blue"]
    cur = ["I cannot do that.", "I\u2019m unable to answer.", "", "   "]
    check = completion_drift(ref, cur, TINY)
    refusal = _stat(check, "refusal_rate_increase")
    assert refusal.value == pytest.approx(0.5 - 0.25)
    assert refusal.details == {"reference_rate": 0.25, "current_rate": 0.5}
    assert _stat(check, "empty_rate_increase").value == pytest.approx(0.5)
    assert [row["text"] for row in check.top if row.get("kind") == "refusal"] == cur[:2]
    assert _stat(check, "completion_length_psi").details["unit"] == "words"
    # Without reference answers the rates are compared with 0 and the lengths not at all.
    alone = completion_drift(None, cur, TINY)
    assert _stat(alone, "refusal_rate_increase").value == pytest.approx(0.5)
    assert "completion_length_psi" not in {s.name for s in alone.statistics} and alone.notes
    assert is_refusal("As an AI language model, I ...") and not is_refusal("Sorry to hear; try X.")


# --- planted shifts over seeds -------------------------------------------------------------

COMMON = [
    "what",
    "is",
    "my",
    "how",
    "do",
    "i",
    "can",
    "you",
    "please",
    "tell",
    "me",
    "the",
    "a",
    "of",
    "for",
    "with",
]
BANKING = [
    "account",
    "balance",
    "transfer",
    "card",
    "payment",
    "bank",
    "loan",
    "deposit",
    "fee",
    "statement",
    "pin",
]
WEATHER = [
    "weather",
    "rain",
    "forecast",
    "sunny",
    "storm",
    "cloud",
    "wind",
    "snow",
    "temperature",
    "humid",
    "frost",
]


def _prompts(rng: np.random.Generator, n: int, topic: list[str], *, words=(4, 20)) -> list[str]:
    out = []
    for length in rng.integers(words[0], words[1], size=n):
        pool = rng.random(length) < 0.5
        out.append(" ".join(rng.choice(COMMON if p else topic) for p in pool))
    return out


def _config(seed: int) -> DriftConfig:
    return DriftConfig(seed=seed, classifier_max_rows=600)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_topic_shift_is_flagged_and_the_same_topic_is_not(seed) -> None:
    rng = np.random.default_rng(seed)
    reference = Sample(texts=_prompts(rng, 1000, BANKING))
    same = compute_drift(reference, Sample(texts=_prompts(rng, 300, BANKING)), _config(seed))
    shifted = compute_drift(reference, Sample(texts=_prompts(rng, 300, WEATHER)), _config(seed))
    assert same.status == "stable", json.dumps(same.to_dict(), indent=1)[:3000]
    assert shifted.status == "drifted"
    assert shifted.check("tokens").drifted and shifted.check("domain_classifier").drifted
    assert not shifted.check("prompt_length").drifted  # the lengths did not move
    top_tokens = {row["token"] for row in shifted.check("tokens").top[:5]}
    assert top_tokens <= set(WEATHER) | set(BANKING)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_length_shift_is_flagged_by_the_length_statistics(seed) -> None:
    rng = np.random.default_rng(seed)
    reference = Sample(texts=_prompts(rng, 1000, BANKING, words=(4, 20)))
    longer = Sample(texts=_prompts(rng, 300, BANKING, words=(12, 40)))
    report = compute_drift(reference, longer, _config(seed))
    length = report.check("prompt_length")
    assert all(s.drifted for s in length.statistics), length.to_dict()
    assert _stat(length, "prompt_length_psi").details["unit"] == "words"


@pytest.mark.parametrize("seed", SEEDS)
def test_an_embedding_shift_is_flagged_and_noise_is_not(seed) -> None:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=32)
    ref = centre + rng.normal(scale=2.0, size=(800, 32))
    same = centre + rng.normal(scale=2.0, size=(200, 32))
    moved = centre + rng.normal(size=32) + rng.normal(scale=2.0, size=(200, 32))
    assert not centroid_drift(ref, same, _config(seed)).drifted
    assert centroid_drift(ref, moved, _config(seed)).drifted
    # Small windows are noisy: the noise floor, not the threshold, holds them back.
    tiny = centroid_drift(ref, same[:5], DriftConfig(seed=seed, min_current_rows=5))
    statistic = tiny.statistics[0]
    assert statistic.value >= statistic.threshold and not statistic.drifted


@pytest.mark.parametrize("seed", SEEDS)
def test_classifier_outputs_shift_is_flagged_and_steady_outputs_are_not(seed) -> None:
    rng = np.random.default_rng(seed)
    labels, mix, shifted_mix = ["billing", "card", "loan"], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]

    def window(n, p, confidence):
        return Sample(
            labels=list(rng.choice(labels, size=n, p=p)),
            confidences=list(rng.beta(confidence, 2, size=n)),
        )

    reference = window(1000, mix, 8)
    outputs = partial(compute_drift, reference, config=_config(seed))
    same = outputs(window(400, mix, 8)).check("predicted_labels")
    shifted = outputs(window(400, shifted_mix, 4)).check("predicted_labels")
    assert not same.drifted, same.to_dict()
    assert all(s.drifted for s in shifted.statistics), shifted.to_dict()
    assert shifted.top[0]["label"] in ("billing", "loan")


@pytest.mark.parametrize("seed", SEEDS)
def test_more_refusals_and_longer_answers_are_flagged(seed) -> None:
    rng = np.random.default_rng(seed)

    def answers(n, refusal_rate, words):
        out = []
        for length in rng.integers(words[0], words[1], size=n):
            if rng.random() < refusal_rate:
                out.append("I'm sorry, but I cannot help with that.")
            else:
                out.append(" ".join(rng.choice(BANKING, size=length)))
        return out

    reference = answers(1000, 0.02, (5, 30))
    same = completion_drift(reference, answers(400, 0.02, (5, 30)), _config(seed))
    shifted = completion_drift(reference, answers(400, 0.15, (20, 60)), _config(seed))
    assert not same.drifted, same.to_dict()
    assert _stat(shifted, "refusal_rate_increase").drifted
    assert _stat(shifted, "completion_length_psi").drifted
    assert not _stat(shifted, "empty_rate_increase").drifted


def test_a_tokenizer_gives_token_units_names_and_the_unknown_rate() -> None:
    from tests.tiny_tokenizers import wordpiece_tokenizer

    rng = np.random.default_rng(0)
    reference_texts = _prompts(rng, 300, BANKING)
    tokenizer = wordpiece_tokenizer(reference_texts, vocab_size=200)
    # Greek letters were never seen by the tokenizer: they are [UNK].
    current_texts = [f"{t} λόγος δεδομένα" for t in _prompts(rng, 300, BANKING)]
    report = compute_drift(
        Sample(texts=reference_texts),
        Sample(texts=current_texts),
        DriftConfig(),
        tokenizer=tokenizer,
    )
    tokens = report.check("tokens")
    oov = _stat(tokens, "token_oov_rate_increase")
    assert oov.details["reference_rate"] == 0 and oov.drifted
    assert tokens.top[0]["token"] == "[UNK]"
    assert _stat(report.check("prompt_length"), "prompt_length_psi").details["unit"] == "tokens"


# --- missing data --------------------------------------------------------------------------


def test_an_empty_window_is_no_data_not_an_error() -> None:
    report = compute_drift(Sample(texts=["a b"] * 200), Sample(texts=[]), DriftConfig())
    assert report.status == "no_data" and not report.drifted
    assert {c.status for c in report.checks} == {"skipped"}
    assert all(c.reason == "The window has no requests." for c in report.checks)
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.parametrize("texts", [None, [], ["", "  "] * 100])
def test_a_reference_without_text_skips_the_input_checks_with_a_reason(texts) -> None:
    current = Sample(texts=["hello there"] * 200, completions=["Hi."] * 200)
    report = compute_drift(Sample(texts=texts), current, DriftConfig())
    for name in ("prompt_length", "tokens", "domain_classifier", "embedding_centroid"):
        assert report.check(name).status == "skipped"
        assert "reference has no text" in report.check(name).reason
    completions = report.check("completions")  # the outputs still compare with a baseline of 0
    assert completions.status == "computed" and completions.notes
    assert report.status == "stable"
    json.dumps(report.to_dict(), allow_nan=False)


def test_small_windows_and_missing_outputs_are_skipped_with_their_reasons() -> None:
    report = compute_drift(
        Sample(texts=["a b c"] * 500, labels=["x"] * 500),
        Sample(texts=["a b c"] * 20, labels=["x"] * 20),
        DriftConfig(),
    )
    assert "20 rows; at least 100" in report.check("prompt_length").reason
    assert "20 rows" in report.check("predicted_labels").reason
    assert report.check("embedding_centroid").reason.startswith("No encoder")
    no_outputs = compute_drift(Sample(texts=["a"] * 200), Sample(texts=["b"] * 200), TINY)
    assert "no answers" in no_outputs.check("outputs").reason
    unlabelled = compute_drift(
        Sample(texts=["a"] * 5), Sample(texts=["a"] * 5, labels=["x"] * 5), TINY
    )
    assert unlabelled.check("predicted_labels").reason == "The reference has no labels."


def test_misaligned_sample_columns_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="one length"):
        Sample(texts=["a", "b"], labels=["x"])


# --- the config ----------------------------------------------------------------------------


def test_the_config_refuses_every_bad_value_at_once() -> None:
    with pytest.raises(DriftConfigError) as caught:
        DriftConfig.from_dict(
            {
                "prompt_length_psi": -1,
                "classifier_auc": 0.4,
                "token_js_distance": "0.1",
                "label_psi": True,
                "false_alarm_rate": 0,
                "min_current_rows": 2.5,
                "no_such_threshold": 1,
            }
        )
    fields = caught.value.fields
    assert set(fields) == {
        "prompt_length_psi",
        "classifier_auc",
        "token_js_distance",
        "label_psi",
        "false_alarm_rate",
        "min_current_rows",
        "config",
    }
    assert fields["prompt_length_psi"] == "prompt_length_psi must be between 0 and 10, not -1."
    assert "between 0.5 and 1" in fields["classifier_auc"]
    assert "must be a number" in fields["token_js_distance"] and "a number" in fields["label_psi"]
    assert "above 0" in fields["false_alarm_rate"]
    assert "whole number" in fields["min_current_rows"]
    assert "no_such_threshold" in fields["config"]
    with pytest.raises(DriftConfigError, match="object"):
        DriftConfig.from_dict(["prompt_length_psi"])
    with pytest.raises(DriftConfigError, match=r"nan|between"):
        DriftConfig(label_psi=float("nan"))


def test_the_config_defaults_and_round_trip() -> None:
    config = DriftConfig.from_dict({"prompt_length_psi": 0.25, "seed": 3.0})
    assert config.prompt_length_psi == 0.25 and config.seed == 3 and isinstance(config.seed, int)
    assert DriftConfig.from_dict(config.to_dict()) == config
    assert DriftConfig.from_dict(None) == DriftConfig()
    defaults = {row["name"]: row for row in settings_schema()}
    assert defaults["prompt_length_psi"]["default"] == 0.2
    assert defaults["classifier_auc"]["default"] == 0.55
    assert defaults["label_chi2_p_value"]["rule"] == "<"
    assert set(defaults) == set(DriftConfig().to_dict())


# --- embeddings and purity -------------------------------------------------------------------


def test_embed_texts_mean_pools_a_local_encoder(tmp_path) -> None:
    from serving.monitoring.runtime.embeddings import embed_texts
    from tests.serving.engine.models import TEXTS, tiny_encoder_dir

    model_dir = tiny_encoder_dir(tmp_path)
    vectors = embed_texts(model_dir, TEXTS[:4], batch_size=2)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    # Batching by length reorders the texts; each row is still its own text's.
    assert embed_texts(model_dir, [TEXTS[3]])[0] == pytest.approx(vectors[3], abs=1e-5)
    reference = Sample(texts=TEXTS * 20)
    report = compute_drift(
        reference, Sample(texts=TEXTS[:4] * 30), TINY, embed=partial(embed_texts, model_dir)
    )
    centroid = report.check("embedding_centroid")
    assert centroid.status == "computed" and centroid.statistics[0].details["dimensions"] == 32


def test_the_runtime_imports_no_django_or_celery() -> None:
    from tests.llmhub.test_runtime_purity import forbidden_imports

    modules = ["serving.monitoring.runtime." + name for name in ("config", "drift", "embeddings")]
    assert forbidden_imports(modules) == {}
