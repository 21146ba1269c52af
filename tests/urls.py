"""URLs of the test suite: the Django admin, where dead letters are shown."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
