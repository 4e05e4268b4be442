"""The Celery application: `celery -A app worker -Q gpu0 -c 1`, `celery -A app flower`.

Settings come from the environment (VLMQ_*) and the optional YAML file; see config.settings.
"""

import sys

from app.factory import create_app
from config.settings import load_settings

if "flower" in sys.argv[1:]:
    from app.flower_guard import install

    install()

settings = load_settings()
app = create_app(settings)
