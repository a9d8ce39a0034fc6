"""Settings of django-demo, from the environment the package sets.

- DJANGO_DEMO_CONFIG_PATH: INI file with a [django-demo] section (tagline); defaults
  apply when it is missing.
- DJANGO_DEMO_STATE_DIR: writable state, owned by the service user: the sqlite
  database and the secret key the package creates at install.
- DJANGO_DEMO_STATIC_ROOT: where collectstatic writes (set at build time); at
  runtime the collected files are installed at /usr/share/django-demo/static.

Importing this module must work in the build sandbox too, where none of the files
above exist.
"""

import configparser
import os
import secrets
from pathlib import Path

STATE_DIR = Path(os.environ.get("DJANGO_DEMO_STATE_DIR", "/var/lib/django-demo"))
CONFIG_PATH = os.environ.get("DJANGO_DEMO_CONFIG_PATH", "/etc/django-demo/config.cfg")

# A missing config file is fine (configparser.read skips it): defaults apply.
_config = configparser.ConfigParser()
_config.read(CONFIG_PATH, encoding="utf-8")
DJDEMO_TAGLINE = _config.get("django-demo", "tagline", fallback="hello from django")


def _secret_key() -> str:
    # The package writes the key at install. Without it (at build time, when only
    # collectstatic runs) a key for this process alone: never a constant.
    try:
        return (STATE_DIR / "secret_key").read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return secrets.token_hex(32)


SECRET_KEY = _secret_key()
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "djdemo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # serves STATIC_ROOT, right after security
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "djdemo.urls"
WSGI_APPLICATION = "djdemo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STATE_DIR / "db.sqlite3",
        # Several gunicorn workers share the file: WAL lets readers run beside a writer.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Plain StaticFilesStorage (no hashed names, no compression): collectstatic output
# is the source files as they are, so the build is reproducible.
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("DJANGO_DEMO_STATIC_ROOT", "/usr/share/django-demo/static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Everything to stderr, which gunicorn and the journal capture.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
