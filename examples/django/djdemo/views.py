from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render

from .models import Visit


def index(request):
    Visit.objects.create()
    context = {"tagline": settings.DJDEMO_TAGLINE, "visits": Visit.objects.count()}
    return render(request, "djdemo/index.html", context)


def health(request):
    return HttpResponse("ok", content_type="text/plain")
