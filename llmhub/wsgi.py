"""WSGI entry point (gunicorn, and ``runserver``, which loads it through WSGI_APPLICATION)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmhub.settings")

application = get_wsgi_application()

# Every web process also sweeps jobs on a timer, so a job is recovered even while no worker
# (and no beat) is alive; see llmhub.sweeper.
from llmhub.sweeper import start_sweeper  # noqa: E402 - needs the settings configured above

start_sweeper(where="web")
