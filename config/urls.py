"""URLs of the orders service (``web`` in the Procfile)."""

from django.urls import path

from config.orders.views import place_order_view

urlpatterns = [path("orders/", place_order_view)]
