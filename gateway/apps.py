from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _load_catalog(sender: AppConfig, **kwargs: Any) -> None:
    from gateway.catalog import load_catalog

    load_catalog()


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        post_migrate.connect(_load_catalog, sender=self)
        # Connects the signals that drop cached catalog/BYOK copies when they change, in every
        # process (a worker or a shell may save before anything imported the module).
        import gateway.routing  # noqa: F401
