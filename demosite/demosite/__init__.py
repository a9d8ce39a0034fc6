"""demosite: a small Flask application showing a configurable tagline.

The configuration file is named by the environment variable DEMOSITE_CONFIG_PATH
(a Python file such as /etc/demosite/config.cfg defining TAGLINE).
"""

import logging
import logging.config
import os

from flask import Flask, render_template

DEFAULT_TAGLINE = "Hello from demosite."


def create_app() -> Flask:
    application = Flask(__name__)
    application.config["TAGLINE"] = DEFAULT_TAGLINE
    config_path = os.environ.get("DEMOSITE_CONFIG_PATH")
    if config_path:
        application.config.from_pyfile(config_path)
    logging_path = os.environ.get("DEMOSITE_LOGGING_CONFIG_PATH")
    if logging_path and os.path.exists(logging_path):
        logging.config.fileConfig(logging_path, disable_existing_loggers=False)

    @application.route("/")
    def index():
        application.logger.info("serving index")
        return render_template("index.html", tagline=application.config["TAGLINE"])

    @application.route("/health")
    def health():
        return {"status": "ok"}

    return application


app = create_app()
