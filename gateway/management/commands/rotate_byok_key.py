from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateway.byok import rotate_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every BYOK credential with the first key of BYOK_ENCRYPTION_KEYS. Put the new key first "
        "and keep the old ones after it until this has run; running it again changes nothing."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = rotate_all()
        current = report.checked - report.rotated - len(report.failed)
        self.stdout.write(
            f"Rotated {report.rotated} BYOK credential(s) to the newest key "
            f"({report.checked} checked, {current} already on it)."
        )
        if report.failed:
            raise CommandError(
                f"{len(report.failed)} credential(s) cannot be decrypted with any key of BYOK_ENCRYPTION_KEYS: "
                + ", ".join(report.failed)
            )
