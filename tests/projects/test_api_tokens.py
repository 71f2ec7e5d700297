"""API tokens: created once in plaintext, stored hashed, usable, revocable, expiring."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from projects.models import ApiToken
from projects.services import hash_token
from tests.factories import UserFactory


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_token_lifecycle_through_the_api(db) -> None:
    user = UserFactory(username="integrator")
    session = APIClient()
    session.force_login(user)

    created = session.post("/api/v1/tokens/", {"name": "CI", "expires_in_days": 30})
    assert created.status_code == 201
    plaintext = created.json()["token"]
    assert plaintext.startswith("llmh_")

    stored = ApiToken.objects.get(pk=created.json()["id"])
    assert stored.key_hash == hash_token(plaintext)
    assert plaintext not in (stored.key_hash, stored.prefix)
    # The secret is never shown again.
    assert "token" not in session.get(f"/api/v1/tokens/{stored.pk}/").json()

    me = bearer(plaintext).get("/api/v1/me/")
    assert me.status_code == 200 and me.json()["username"] == "integrator"
    stored.refresh_from_db()
    assert stored.last_used_at is not None

    revoked = bearer(plaintext).post(f"/api/v1/tokens/{stored.pk}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["is_active"] is False

    refused = bearer(plaintext).get("/api/v1/me/")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "This API token was revoked."


def test_unknown_and_malformed_tokens_are_refused(db) -> None:
    assert bearer("llmh_nope_nope").get("/api/v1/me/").json()["error"]["message"] == (
        "Invalid API token."
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    assert client.get("/api/v1/me/").status_code == 401


def test_expired_token_is_refused(db, api) -> None:
    user = UserFactory()
    client = api(user)
    ApiToken.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/v1/me/")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_another_users_token_cannot_be_seen_or_revoked(db, api) -> None:
    owner, other = UserFactory(), UserFactory()
    api(owner)
    token = ApiToken.objects.get(user=owner)
    client = api(other)
    assert client.get(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert client.post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert [t["id"] for t in client.get("/api/v1/tokens/").json()["results"]] != [token.pk]


def test_token_name_is_required(db, api) -> None:
    response = api(UserFactory()).post("/api/v1/tokens/", {"name": ""})
    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]
