from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "config.notifications"

    def ready(self) -> None:
        from config.notifications import receivers  # noqa: F401 - connects the receivers
