from django.apps import AppConfig


class DjdemoConfig(AppConfig):
    name = "djdemo"
    verbose_name = "django-demo"
