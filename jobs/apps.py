from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The shared job machinery (no models): live updates and housekeeping."""

    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from billing import ledger
        from jobs import housekeeping

        housekeeping.register("release expired holds", ledger.sweep_expired_holds)
