"""Settings of the browser tests' live server: `infrai.settings.test`, with e-mail in files.

`infrai.settings.test` pins the in-memory mail backend, which a test cannot read from another
process; here mail goes to EMAIL_FILE_PATH, where the `mailbox` fixture reads it.
"""

from infrai.lib.env import env_str
from infrai.settings.test import *  # noqa: F403

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
