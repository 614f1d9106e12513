from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        # Connects the signals that drop a cached project key when it is revoked or deleted.
        import console.keys  # noqa: F401
