from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "config.billing"

    def ready(self) -> None:
        from config.billing import receivers  # noqa: F401 - connects the receivers
