"""POST /notes (text=...) stores a row; GET /notes lists them; POST /cache/KEY
(value=...) and GET /cache/KEY use the cache; GET / says which backends run."""

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from notes.models import Note


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"database": connection.vendor, "cache": settings.CACHES["default"]["BACKEND"]}
    )


def notes(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        note = Note.objects.create(text=request.POST.get("text", ""))
        return JsonResponse({"id": note.id}, status=201)
    return JsonResponse({"notes": list(Note.objects.order_by("id").values_list("text", flat=True))})


def cached(request: HttpRequest, key: str) -> HttpResponse:
    if request.method == "POST":
        cache.set(key, request.POST.get("value", ""), timeout=None)
        return JsonResponse({"key": key}, status=201)
    value = cache.get(key)
    if value is None:
        return JsonResponse({"key": key, "error": "not cached"}, status=404)
    return JsonResponse({"key": key, "value": value})
