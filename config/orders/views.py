"""The web side of the orders service: ``POST /orders/`` places an order."""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from config.orders.services import place_order


@csrf_exempt  # an example API called with curl; a real one authenticates its clients
@require_POST
def place_order_view(request: HttpRequest) -> JsonResponse:
    """Place an order (optionally ``email=...``) and return it; its event is on its way.

    An ``email`` that is not an email address (an empty one included) is answered with 400 and
    ``{"errors": {"email": [...]}}``; without ``email`` the order goes to a sample customer.
    """
    email = request.POST.get("email")
    if email is not None:
        try:
            validate_email(email)
        except ValidationError as error:
            return JsonResponse({"errors": {"email": error.messages}}, status=400)
    order = place_order(email=email)
    return JsonResponse(
        {"id": str(order.id), "email": order.customer.email, "total": str(order.total)},
        status=201,
    )
