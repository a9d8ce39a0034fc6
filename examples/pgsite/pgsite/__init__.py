"""pgsite: counts visits in PostgreSQL and draws a badge with Pillow.

The configuration (an INI file with a [database] dsn) is named by the environment
variable PGSITE_CONFIG_PATH.
"""

import configparser
import io
import os

import psycopg2
from PIL import Image, ImageDraw


def _dsn() -> str:
    config = configparser.ConfigParser(interpolation=None)
    path = os.environ.get("PGSITE_CONFIG_PATH")
    if path:
        config.read(path)
    return config.get("database", "dsn", fallback="dbname=pgsite")


def _visit() -> str:
    with psycopg2.connect(_dsn()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS visits (at timestamptz NOT NULL DEFAULT now())")
        cur.execute("INSERT INTO visits DEFAULT VALUES")
        cur.execute("SELECT count(*), current_setting('server_version') FROM visits")
        count, server = cur.fetchone()
    libpq = psycopg2.extensions.libpq_version()
    return f"visits: {count}\nserver: PostgreSQL {server}\nlibpq: {libpq}\n"


def _badge() -> bytes:
    image = Image.new("RGB", (120, 40), (32, 96, 160))
    ImageDraw.Draw(image).text((10, 12), "pgsite", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    try:
        if path == "/":
            body, kind = _visit().encode(), "text/plain; charset=utf-8"
        elif path == "/badge.jpg":
            body, kind = _badge(), "image/jpeg"
        elif path == "/health":
            body, kind = b"ok\n", "text/plain"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
    except psycopg2.Error as e:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"database error: {e}\n".encode()]
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]
