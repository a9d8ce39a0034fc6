"""Serves one note a day from the notes shipped with the package."""

import datetime
import json
from importlib import resources

from flask import Flask

app = Flask(__name__)


def notes():
    text = resources.files("notes_app").joinpath("data/notes.json").read_text(encoding="utf-8")
    return json.loads(text)


@app.get("/")
def today():
    all_notes = notes()
    note = all_notes[datetime.date.today().toordinal() % len(all_notes)]
    return {"note": note, "of": len(all_notes)}
