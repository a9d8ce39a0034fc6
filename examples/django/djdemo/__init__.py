"""djdemo: a small Django site counting its visits in sqlite.

Settings come from djdemo.settings, which reads the environment the package sets:
DJANGO_DEMO_CONFIG_PATH (an INI file), DJANGO_DEMO_STATE_DIR (database and secret key)
and, when collecting static files at build time, DJANGO_DEMO_STATIC_ROOT.
"""
