from django.apps import AppConfig


class ReceiversConfig(AppConfig):
    name = "tests.integration.receivers"
    label = "integration_receivers"

    def ready(self) -> None:
        from tests.integration.receivers import handlers  # noqa: F401
