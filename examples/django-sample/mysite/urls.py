from django.contrib import admin
from django.http import HttpResponse
from django.urls import path


def index(request):  # type: ignore[no-untyped-def]
    return HttpResponse("Hello from the Django sample on Roost!\n")


urlpatterns = [path("", index), path("admin/", admin.site.urls)]
