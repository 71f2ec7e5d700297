"""Finding and redacting personal data: emails, phone numbers, credit cards, IP addresses, IBANs.

``find_pii(text)`` returns validated spans ``(kind, start, end)``; ``redact(text)`` replaces
them with typed placeholders ([EMAIL], [PHONE], [CREDIT_CARD], [IP_ADDRESS], [IBAN]).

A pattern only proposes a candidate; each is validated before it counts, to keep false
positives (dates, versions, amounts, ids) out:
- credit cards: 13-19 digits, a known network prefix, and the Luhn check;
- IBANs: the country's length and the mod-97 check;
- IP addresses: they parse (IPv4 or IPv6) and do not follow "v" or "version";
- phone numbers: an international number (+ and 8-15 digits), an area code in parentheses,
  groups of 2-4 digits with one consistent separator (not a date, a year range or a number
  with thousands separators), or a bare run of digits right after "phone", "tel", "call"...

Kinds are tried from the most specific (email, card, IBAN, IP) to the least (phone); a span
taken by one kind is not reported again. Text with no "@", no run of digits and no IPv6-like
colon is rejected by three cheap checks first, which keeps redaction fast on ordinary prose.
"""

from __future__ import annotations

import ipaddress
import re

KINDS = ("email", "credit_card", "iban", "ip_address", "phone")
PLACEHOLDERS = {
    "email": "[EMAIL]",
    "credit_card": "[CREDIT_CARD]",
    "iban": "[IBAN]",
    "ip_address": "[IP_ADDRESS]",
    "phone": "[PHONE]",
}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
)
# Candidates only; ``_phone`` decides. Named groups tell which shape matched.
_PHONE = re.compile(
    r"(?<![\w+.,/-])(?:"
    r"(?P<intl>\+\d[\d \t().-]{6,22}\d)"
    r"|(?P<area>\(\d{2,5}\)[ \t.-]?\d[\d \t.-]{3,14}\d)"
    r"|(?P<grouped>\d{2,4}(?:[ .-]\d{2,4}){1,5})"
    r"|(?P<bare>\d{7,15})"
    r")(?![\w+]|[.,/-]\d)"
)
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|call|mobile|cell|fax|whatsapp|sms|text me)\b[^\n\d]{0,12}$",
    re.IGNORECASE,
)
_DATE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")
_YEAR_RANGE = re.compile(r"^(?:1[5-9]|20)\d\d[ ]?[-.][ ]?(?:(?:1[5-9]|20)\d\d|\d\d)$")
_VERSION_BEFORE = re.compile(r"(?:\bv|\bversion\s?|\brelease\s?)$", re.IGNORECASE)
# Cheap gates: phones, cards, IBANs and IPv4 addresses all contain a run of at least seven
# digits and separators; IPv6 addresses two colons with at most four hex digits between.
_DIGIT_RUN = re.compile(r"\d[\d \t().+-]{5,}\d")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_NON_DIGIT = re.compile(r"\D")
_WINDOW = 48  # characters around a run of digits that a number-like candidate may span

# IBAN length per country (ISO 13616 registry).
_IBAN_TABLE = (
    "AL:28 AD:24 AT:20 AZ:28 BH:22 BE:16 BA:20 BR:29 BG:22 CR:22 HR:21 CY:28 CZ:24 DK:18 "
    "DO:28 EE:20 FO:18 FI:18 FR:27 GE:22 DE:22 GI:23 GR:27 GL:18 GT:28 HU:28 IS:26 IE:22 "
    "IL:23 IT:27 JO:30 KZ:20 XK:20 KW:30 LV:21 LB:28 LI:21 LT:20 LU:20 MK:19 MT:31 MR:27 "
    "MU:30 MD:24 MC:27 ME:22 NL:18 NO:15 PK:24 PS:29 PL:28 PT:25 QA:29 RO:24 SM:27 SA:24 "
    "RS:22 SK:24 SI:19 ES:24 SE:24 CH:21 TN:24 TR:26 AE:23 GB:22 VG:24 UA:29"
)
_IBAN_LENGTHS = {code: int(n) for code, n in (item.split(":") for item in _IBAN_TABLE.split())}


def luhn_valid(digits: str) -> bool:
    total, double = 0, False
    for char in reversed(digits):
        value = int(char)
        if double:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
        double = not double
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _card(match: str) -> bool:
    digits = _NON_DIGIT.sub("", match)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    # Issuer prefixes: Amex/Diners/JCB 3, Visa 4, Mastercard 51-55 and 2221-2720, Discover and
    # UnionPay 6. Ids and tracking numbers that merely pass Luhn (one in ten) mostly do not.
    if digits[0] == "2":
        if not 2221 <= int(digits[:4]) <= 2720:
            return False
    elif digits[0] not in "3456":
        return False
    return luhn_valid(digits)


def _ip(match: str) -> bool:
    if not any(ch.isalnum() for ch in match):
        return False  # "::" alone is an address, but in prose it is punctuation
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


def _phone(match: re.Match, text: str) -> bool:
    candidate = match.group()
    digits = _NON_DIGIT.sub("", candidate)
    start = match.start()
    if _VERSION_BEFORE.search(text[max(0, start - 9) : start]):
        return False
    if match.group("intl"):
        return 8 <= len(digits) <= 15
    if match.group("area"):
        return 7 <= len(digits) <= 15
    if match.group("bare"):
        return bool(_PHONE_CONTEXT.search(text[max(0, start - 30) : start]))
    # Digit groups with separators: one consistent separator, 7-12 digits, and not something
    # else that is written the same way.
    separators = set(re.findall(r"[ .-]", candidate))
    if len(separators) != 1 or not 7 <= len(digits) <= 12:
        return False
    if _DATE.match(candidate) or _YEAR_RANGE.match(candidate):
        return False
    groups = re.split(r"[ .-]", candidate)
    if len(groups) == 2:  # only 555-1234, a local number; 2019-2020 or 12 3456 are not
        return separators == {"-"} and len(groups[0]) == 3 and len(groups[1]) == 4
    # 10 000 000 or 1.234.567 is a number with thousands separators, not a phone.
    thousands = len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])
    return separators == {"-"} or not thousands


def _windows(text: str) -> list[tuple[int, int]]:
    """Merged spans around each run of digits: number-like PII can only occur in them."""
    windows: list[tuple[int, int]] = []
    for match in _DIGIT_RUN.finditer(text):
        start, end = max(0, match.start() - _WINDOW), match.end() + _WINDOW
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def find_pii(text: str, kinds: tuple[str, ...] | list[str] = KINDS) -> list[tuple[str, int, int]]:
    """Validated PII spans ``(kind, start, end)`` in text order, without overlaps.

    ``kinds`` limits what is reported (any of :data:`KINDS`).
    """
    if not text:
        return []
    has_email = "@" in text and "email" in kinds
    windows = _windows(text) if _DIGIT_RUN.search(text) else []
    has_ipv6 = "ip_address" in kinds and ":" in text and _IPV6_HINT.search(text) is not None
    if not (has_email or windows or has_ipv6):
        return []
    spans: list[tuple[str, int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for _k, s, e in spans)

    def scan(pattern: re.Pattern):
        for start, end in windows:
            yield from pattern.finditer(text, start, end)

    if has_email:
        spans += [("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    if windows and "credit_card" in kinds:
        for m in scan(_CARD):
            if _card(m.group()) and free(m.start(), m.end()):
                spans.append(("credit_card", m.start(), m.end()))
    blocked: list[tuple[str, int, int]] = []  # IBAN-shaped but invalid: not a phone either
    if windows:
        for m in scan(_IBAN):
            if "iban" in kinds and iban_valid(m.group()) and free(m.start(), m.end()):
                spans.append(("iban", m.start(), m.end()))
            else:
                blocked.append(("", m.start(), m.end()))
    if "ip_address" in kinds:
        candidates = (list(_IPV6.finditer(text)) if has_ipv6 else []) + list(scan(_IPV4))
        for m in candidates:
            if (
                _ip(m.group())
                and free(m.start(), m.end())
                and not _VERSION_BEFORE.search(text[max(0, m.start() - 9) : m.start()])
            ):
                spans.append(("ip_address", m.start(), m.end()))
    if windows and "phone" in kinds:
        spans += blocked
        for m in scan(_PHONE):
            if free(m.start(), m.end()) and _phone(m, text):
                spans.append(("phone", m.start(), m.end()))
        spans = [span for span in spans if span[0]]
    return sorted(spans, key=lambda span: span[1])


def redact(text: str, kinds: tuple[str, ...] | list[str] = KINDS) -> str:
    """``text`` with each PII span of ``kinds`` replaced by its placeholder, e.g. [EMAIL]."""
    spans = find_pii(text, kinds)
    if not spans:
        return text
    pieces, last = [], 0
    for kind, start, end in spans:
        pieces.append(text[last:start])
        pieces.append(PLACEHOLDERS[kind])
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
