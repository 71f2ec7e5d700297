"""llmhub.net.check_public_url: only http(s) URLs whose host resolves to public addresses,
every address checked, the field named in the error; private ones allowed by the setting."""

from __future__ import annotations

import socket

import pytest
from django.core.exceptions import ValidationError

from llmhub import net


@pytest.fixture
def public_only(settings):
    settings.LLMHUB_ALLOW_PRIVATE_URLS = False


def _resolving(monkeypatch, answers: dict[str, list[str]]) -> None:
    """Names resolve to ``answers`` (no DNS in tests); anything else is unknown."""

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(family[":" in a], socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(net.socket, "getaddrinfo", fake_getaddrinfo)


def _refused(url: str, field: str = "upstream_url") -> str:
    with pytest.raises(ValidationError) as caught:
        net.check_public_url(url, field=field)
    [message] = caught.value.message_dict[field]
    return message


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.5",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "[::1]",
        "[fe80::1]",
        "[fd00::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
    ],
)
def test_private_loopback_and_link_local_literals_are_refused(public_only, address) -> None:
    message = _refused(f"http://{address}:8000/v1")
    assert "private, loopback or link-local" in message


def test_every_resolved_address_is_checked(public_only, monkeypatch) -> None:
    _resolving(
        monkeypatch,
        {"api.example.com": ["93.184.216.34"], "sneaky.example.com": ["93.184.216.34", "10.0.0.7"]},
    )
    assert net.check_public_url(" https://api.example.com/v1 ", field="url") == (
        "https://api.example.com/v1"
    )
    assert "10.0.0.7" in _refused("https://sneaky.example.com/v1")
    assert "cannot be resolved" in _refused("https://nowhere.example.com/v1")


def test_public_literals_pass(public_only) -> None:
    assert net.check_public_url("http://8.8.8.8/v1", field="u") == "http://8.8.8.8/v1"
    assert net.check_public_url("https://[2606:4700::1111]/v1", field="u")


@pytest.mark.parametrize(
    "url, words",
    [
        ("", "Give a URL"),
        ("ftp://8.8.8.8/", "Only http:// and https://"),
        ("file:///etc/passwd", "Only http:// and https://"),
        ("javascript:alert(1)", "Only http:// and https://"),
        ("http:///v1", "names no host"),
        ("http://8.8.8.8:99999/", "not a valid URL"),
        ("http://user:pw@8.8.8.8/v1", "credentials"),
    ],
)
def test_malformed_urls_name_the_field(public_only, url, words) -> None:
    assert words in _refused(url, field="webhook_url")


def test_the_setting_allows_private_hosts(settings) -> None:
    settings.LLMHUB_ALLOW_PRIVATE_URLS = True
    assert net.check_public_url("http://127.0.0.1:8001/v1", field="u") == (
        "http://127.0.0.1:8001/v1"
    )
    assert net.check_public_url("http://localhost:8001/v1", field="u")
    # The scheme is checked all the same.
    with pytest.raises(ValidationError):
        net.check_public_url("gopher://127.0.0.1/", field="u")
