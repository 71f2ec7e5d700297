"""API token authentication: ``Authorization: Bearer llmh_<prefix>_<secret>``.

Only the SHA-256 of a token is stored; the lookup is by that hash, so the secret is compared in
the database index rather than in Python. Revoked and expired tokens are refused with a message
saying which.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from projects.models import ApiToken
from projects.services import hash_token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Bearer <token>'."
            )
        token = (
            ApiToken.objects.select_related("user").filter(key_hash=hash_token(header[1])).first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid API token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API token was revoked.")
        if not token.is_active:
            raise exceptions.AuthenticationFailed("This API token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This user account is disabled.")
        now = timezone.now()
        # Throttle the write: one per minute per token is enough to show "last used".
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
