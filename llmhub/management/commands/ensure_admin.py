"""Create the first administrator if there is none, and say how to sign in."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser 'admin' with a random password if no superuser exists yet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args, username: str, email: str, **options) -> None:
        User = get_user_model()
        credentials_file = settings.VAR_DIR / "admin-credentials.txt"
        if User.objects.filter(is_superuser=True).exists():
            hint = f" (see {credentials_file})" if credentials_file.exists() else ""
            self.stdout.write(f"An administrator already exists{hint}.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(f"username: {username}\npassword: {password}\n")
        credentials_file.chmod(0o600)
        self.stdout.write(
            self.style.SUCCESS(
                "Created the first administrator.\n"
                f"  username: {username}\n  password: {password}\n"
                f"  (also saved to {credentials_file})"
            )
        )
