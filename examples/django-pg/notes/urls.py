from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from notes import views

urlpatterns = [
    path("", views.index),
    path("notes", csrf_exempt(views.notes)),
    path("cache/<str:key>", csrf_exempt(views.cached)),
]
