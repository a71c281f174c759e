"""Test settings with the gateway installed: ``pytest --ds=serving.test_settings tests/serving``.

Only needed until ``serving`` is in ``config.settings.base.INSTALLED_APPS`` and ``config/urls.py``.
"""

from config.settings.test import *  # noqa: F403
from config.settings.test import INSTALLED_APPS

if "serving" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "serving"]
ROOT_URLCONF = "serving.test_urls"
