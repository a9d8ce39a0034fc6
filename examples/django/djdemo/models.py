from django.db import models


class Visit(models.Model):
    """One request to the index page."""

    created = models.DateTimeField(auto_now_add=True)
