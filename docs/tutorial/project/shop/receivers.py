from django.core.mail import send_mail
from django.dispatch import receiver

from shop.events import ORDER_PLACED


@receiver(ORDER_PLACED)
def send_confirmation_email(metadata, order, from_event_bus, **kwargs):
    where = "a worker" if from_event_bus else "the sending process"
    send_mail(
        subject="Your order",
        message=f"We received your order {order.id} of {order.total} EUR (sent by {where}).",
        from_email=None,
        recipient_list=[order.customer.email],
    )
