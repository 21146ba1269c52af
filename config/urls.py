"""URLs of the example's services: the orders view (``web`` in the Procfile) and the admin.

Every service has the admin; in billing and notifications it is where their dead letters are
read, replayed and discarded (``runserver`` with that service's settings module).
"""

from django.contrib import admin
from django.urls import path

from config.orders.views import place_order_view

urlpatterns = [path("admin/", admin.site.urls), path("orders/", place_order_view)]
