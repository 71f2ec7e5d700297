"""Cleaning steps one by one, PII kinds with true and false positives, recipe validation."""

from __future__ import annotations

import pickle
import time

import pytest

from datasets_app.cleaning import pii
from datasets_app.cleaning.steps import (
    DEFAULT_RECIPE,
    STEPS,
    StepFailed,
    dedupe_key,
    make_filter,
    make_map,
    normalize_unicode,
    step_catalog,
    strip_html,
    validate_recipe,
)
from llmhub.reporting import JobInputError


def _step(name: str, **params) -> dict:
    return validate_recipe([{"step": name, "params": params}])[0]


def _filter(name: str, **params):
    return make_filter(name, _step(name, **params)["params"])


def _map(name: str, **params):
    return make_map(name, _step(name, **params)["params"])


# --- text maps ------------------------------------------------------------------------------


def test_strip_html_keeps_text_and_drops_scripts_navigation_and_boilerplate() -> None:
    page = (
        "<html><head><style>p {color: red}</style></head><body><nav>Home | Products</nav>"
        "<h1>Title</h1><p>Hello <b>big</b> world &amp; friends.</p><p>We use cookies.</p>"
        "<script>track()</script><div>Share this article</div>"
        "<footer>All rights reserved</footer></body></html>"
    )
    assert strip_html(page) == "Title\nHello big world & friends."


def test_strip_html_boilerplate_lines_in_plain_text_and_no_false_tags() -> None:
    text = (
        "Line one stays.\nShare this on Twitter\nThis website uses cookies to improve your "
        "experience. Accept all\n© 2024 Acme Inc. All rights reserved.\nCopyright law protects "
        "authors.\nBake the cookies until golden."
    )
    assert strip_html(text) == (
        "Line one stays.\nCopyright law protects authors.\nBake the cookies until golden."
    )
    assert strip_html("3 < 4 and 5 > 2 are plain") == "3 < 4 and 5 > 2 are plain"
    assert strip_html("AT&amp;T &lt;tags&gt;") == "AT&T <tags>"  # entities only: decoded
    assert strip_html("<p>one<p>two<br>three<ul><li>a</li><li>b</li></ul>") == (
        "one\ntwo\nthree\na\nb"
    )
    assert strip_html("keep\nShare this", remove_boilerplate=False) == "keep\nShare this"


def test_normalize_unicode_nfkc_controls_and_whitespace() -> None:
    assert normalize_unicode("ﬁne\u00a0 cafe\u0301\x07 \t text\n\n\n\nend ") == (
        "fine café text\n\nend"
    )
    assert (
        normalize_unicode("\uff21\uff22\uff23\uff11\uff12\u200b3\r\nnext  line  \rlast")
        == "ABC123\nnext line\nlast"
    )
    assert normalize_unicode("a  b", collapse_whitespace=False) == "a  b"
    assert normalize_unicode("cafe\u0301", form="NFD") == "cafe\u0301"


def test_other_maps() -> None:
    assert _map("lowercase")("MiXeD Ünïcode") == "mixed ünïcode"
    assert _map("regex_replace", pattern=r"\s+", replacement=" ")("a  \n b") == "a b"
    assert _map("regex_replace", pattern=r"(\d+) USD", replacement=r"$\1")("5 USD") == "$5"
    masked = _map("bad_words", words=["darn", "heck no"], action="mask")
    assert masked("Darn it, darnation. HECK NO!") == "*** it, darnation. ***!"
    assert masked("nothing here") == "nothing here"
    assert _map("pii_redact", kinds=["email"])("a@b.io 8.8.8.8") == "[EMAIL] 8.8.8.8"


def test_dedupe_key_ignores_case_punctuation_and_space() -> None:
    assert dedupe_key("Hello, World!  42_x") == dedupe_key("hello world 42x") == "helloworld42x"
    assert dedupe_key("Straße \u2013 Ünï!") == dedupe_key("STRASSE ünï")


# --- filters --------------------------------------------------------------------------------


def test_drop_empty_and_length_in_chars_and_whitespace_tokens() -> None:
    assert not _filter("drop_empty")(["   "]) and not _filter("drop_empty")(["x", ""])
    assert _filter("drop_empty")(["x", "y"])
    length = _filter("length_filter", min_length=3, max_length=10)
    assert length(["hello"]) and not length(["hi"]) and not length(["x" * 11])
    tokens = _filter("length_filter", min_length=2, max_length=3, unit="tokens")
    assert tokens(["two words"]) and not tokens(["one"]) and not tokens(["a b c d"])


def test_length_in_tokens_of_a_trained_tokenizer(tokenizer_dir) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    text = "Now is the winter of our discontent"
    count = len(tokenizer.encode(text, add_special_tokens=False).ids)
    assert count != len(text.split())  # the test tells the two units apart
    keep = _filter(
        "length_filter",
        min_length=count,
        max_length=count,
        unit="tokens",
        tokenizer_dir=str(tokenizer_dir),
    )
    assert keep([text]) and not keep([text + " again"])
    with pytest.raises(JobInputError, match="does not exist"):
        _filter("length_filter", unit="tokens", tokenizer_dir="/nonexistent/tokenizer")


def test_language_filter() -> None:
    english = _filter("language_filter", languages=["en"], min_confidence=0.5)
    assert english(["The weather is lovely today and we will walk to the river."])
    assert not english(["Le temps est magnifique aujourd'hui et nous irons à la rivière."])
    french = _filter("language_filter", languages=["fr", "de"])
    assert french(["Le temps est magnifique aujourd'hui et nous irons à la rivière."])
    with pytest.raises(JobInputError, match="Unknown language code"):
        _filter("language_filter", languages=["xx"])


def test_regex_and_bad_word_filters() -> None:
    regex = _filter("regex_filter", pattern=r"lorem ipsum")
    assert not regex(["Lorem Ipsum dolor"]) and regex(["real text"])
    keep_only = _filter("regex_filter", pattern=r"^Q:", action="keep", ignore_case=False)
    assert keep_only(["Q: what?"]) and not keep_only(["A: that"]) and not keep_only(["q: x"])
    bad = _filter("bad_words", words=["darn", "heck", "good grief"])
    assert not bad(["Oh HECK, no"]) and bad(["checkered past"])  # whole words only
    assert not bad(["Good  grief".replace("  ", " ")]) and bad(["good griefing"])
    assert not bad(["fine", "darn"])  # any text column
    odd = _filter("bad_words", words=["c++"])
    assert not odd(["I write C++ daily"]) and odd(["I write C daily"])


def test_a_backtracking_pattern_times_out_instead_of_hanging(monkeypatch) -> None:
    from datasets_app.cleaning import steps

    monkeypatch.setattr(steps, "REGEX_TIMEOUT_S", 0.2)
    slow = _filter("regex_filter", pattern=r"(a|aa)+$")
    started = time.monotonic()
    with pytest.raises(JobInputError, match=r"took more than 0.2 s on one text"):
        slow(["a" * 5000 + "!"])
    replace = _map("regex_replace", pattern=r"(x+x+)+y", replacement="")
    with pytest.raises(JobInputError, match="simplify the pattern"):
        replace("x" * 5000)
    assert time.monotonic() - started < 5


# --- PII ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("write to jane.doe+news@example.co.uk now", [("email", "jane.doe+news@example.co.uk")]),
        (
            "call +44 20 7946 0958 or (555) 123-4567",
            [("phone", "+44 20 7946 0958"), ("phone", "(555) 123-4567")],
        ),
        ("call 555-123-4567 now", [("phone", "555-123-4567")]),
        ("Berlin office +49 30 1234567.", [("phone", "+49 30 1234567")]),
        ("06 12 34 56 78 is my number", [("phone", "06 12 34 56 78")]),
        ("Phone: 0301234567", [("phone", "0301234567")]),
        ("card 4111 1111 1111 1111 on file", [("credit_card", "4111 1111 1111 1111")]),
        ("card 5500-0000-0000-0004", [("credit_card", "5500-0000-0000-0004")]),
        ("amex 378282246310005.", [("credit_card", "378282246310005")]),
        ("host 10.0.0.254 answered", [("ip_address", "10.0.0.254")]),
        ("v6 2001:db8::ff00:42:8329 up", [("ip_address", "2001:db8::ff00:42:8329")]),
        (
            "link-local fe80::1 and ::ffff:192.0.2.1",
            [("ip_address", "fe80::1"), ("ip_address", "::ffff:192.0.2.1")],
        ),
        ("pay to GB82 WEST 1234 5698 7654 32 please", [("iban", "GB82 WEST 1234 5698 7654 32")]),
        ("pay to DE89370400440532013000", [("iban", "DE89370400440532013000")]),
    ],
)
def test_pii_true_positives(text, found) -> None:
    spans = pii.find_pii(text)
    assert [(kind, text[start:end]) for kind, start, end in spans] == found


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "tracking 1234567890123456 and id 9780306406157",  # numbers that are not cards
        "released 2023-04-05, on 12/05/2023 and 05.04.2023 at 10:30",
        "from 2019-2020 and 1999 - 2004, the years 1914-18",
        "version 1.2.3.4 and v10.0.0.1 and release 2.0.1",
        "pi is 3.14159, it costs 12.50 and 1,234,567.00",
        "population 10 000 000 people, 1.234.567 euros",
        "order number 1234567 shipped, pages 123-456",
        "ISBN 978-3-16-148410-0 and coordinates 52.5200 13.4050",
        "GB82 WEST 1234 5698 7654 33 has a bad checksum",
        "999.1.1.1 is not an address",
        "an @ sign alone, user@localhost",
        "std::vector<int> at 12:30:45, a :: b",
    ],
)
def test_pii_false_positives_are_not_flagged(text) -> None:
    assert pii.find_pii(text) == []


def test_redaction_uses_typed_placeholders_and_chosen_kinds() -> None:
    text = "Mail a@b.io, card 4111111111111111, ip 8.8.8.8, call +1 555 123 4567"
    assert pii.redact(text) == ("Mail [EMAIL], card [CREDIT_CARD], ip [IP_ADDRESS], call [PHONE]")
    assert pii.redact(text, ["email"]) == (
        "Mail [EMAIL], card 4111111111111111, ip 8.8.8.8, call +1 555 123 4567"
    )
    assert pii.redact("IBAN DE89370400440532013000") == "IBAN [IBAN]"
    assert pii.redact("nothing personal here") == "nothing personal here"


# --- validation and catalog -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "non-empty list"),
        ([{"step": "shred"}], r"Step 1: unknown step 'shred'"),
        ([{"step": "lowercase"}, "x"], "Step 2 must be an object"),
        (
            [{"step": "length_filter", "params": {"min_length": -1}}],
            r"Step 1 \(length_filter\), parameter 'min_length': must be at least 0",
        ),
        (
            [{"step": "length_filter", "params": {"min_length": 9, "max_length": 3}}],
            r"min_length \(9\) is above max_length \(3\)",
        ),
        (
            [{"step": "length_filter", "params": {"tokenizer_dir": "/x"}}],
            "only used with unit 'tokens'",
        ),
        (
            [{"step": "lowercase"}, {"step": "near_dedupe", "params": {"threshold": "high"}}],
            r"Step 2 \(near_dedupe\), parameter 'threshold': expected a number",
        ),
        ([{"step": "near_dedupe", "params": {"num_perm": 12.5}}], "expected a whole number"),
        ([{"step": "near_dedupe", "params": {"threshold": 1.5}}], "must be at most 1"),
        ([{"step": "regex_filter", "params": {"pattern": "("}}], "not a valid regular expression"),
        ([{"step": "regex_filter", "params": {}}], "give a regular expression"),
        ([{"step": "regex_filter", "params": {"pattern": "x", "action": "x"}}], "choose one of"),
        ([{"step": "pii_redact", "params": {"kinds": ["ssn"]}}], "unknown PII kind"),
        ([{"step": "language_filter", "params": {"languages": ["English"]}}], "ISO 639-1"),
        ([{"step": "lowercase", "params": {"speed": 2}}], "unknown parameter"),
        ([{"step": "lowercase", "speed": 2}], "unexpected key"),
        ([{"step": "bad_words", "params": {}}], "give at least one word"),
        ([{"step": "strip_html", "params": {"remove_boilerplate": "yes"}}], "true or false"),
        ([{"step": "lowercase"}] * 51, "at most 50 steps"),
    ],
)
def test_recipe_validation_names_the_step_and_parameter(steps, message) -> None:
    with pytest.raises(JobInputError, match=message):
        validate_recipe(steps)


def test_validation_fills_defaults_and_accepts_word_lists_as_text() -> None:
    normalized = validate_recipe(DEFAULT_RECIPE)
    assert [s["step"] for s in normalized] == [
        "strip_html",
        "normalize_unicode",
        "pii_redact",
        "exact_dedupe",
        "near_dedupe",
        "length_filter",
    ]
    assert normalized[4]["params"] == {"threshold": 0.5, "num_perm": 128, "shingle_size": 3}
    assert normalized[5]["params"]["unit"] == "chars"
    words = validate_recipe([{"step": "bad_words", "params": {"words": "darn, heck\nblast"}}])
    assert words[0]["params"]["words"] == ["darn", "heck", "blast"]


def test_catalog_lists_every_step_with_parameters() -> None:
    catalog = step_catalog()
    names = [s["name"] for s in catalog["steps"]]
    assert names == list(STEPS) and len(names) == 12
    by_name = {s["name"]: s for s in catalog["steps"]}
    assert by_name["near_dedupe"]["filters_rows"] and not by_name["near_dedupe"]["changes_text"]
    assert by_name["pii_redact"]["changes_text"] and not by_name["pii_redact"]["filters_rows"]
    threshold = by_name["near_dedupe"]["params"][0]
    assert threshold["name"] == "threshold" and threshold["min"] == 0.1 and threshold["max"] == 1
    assert catalog["default_recipe"] == DEFAULT_RECIPE
    import json

    json.dumps(catalog)  # serializable for the API


def test_step_failed_carries_its_step_and_survives_pickling() -> None:
    error = StepFailed(2, "regex_filter", "row 5: TimeoutError")
    assert isinstance(error, JobInputError)
    assert str(error) == "Step 3 (regex_filter) failed: row 5: TimeoutError"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert (copy.index, copy.step, copy.reason, str(copy)) == (
        2,
        "regex_filter",
        "row 5: TimeoutError",
        str(error),
    )
