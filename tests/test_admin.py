from __future__ import annotations

import pytest

from console.models import User
from gateway.models import CatalogModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("ops@example.com", "a-long-password-1")
    client.force_login(user)
    return client


def test_staff_edit_the_catalog_in_the_admin(staff):
    entry = CatalogModel.objects.get(model_id="sandbox-chat", capability="chat")
    listing = staff.get("/admin/gateway/catalogmodel/")
    assert listing.status_code == 200 and b"sandbox-chat" in listing.content
    assert staff.get(f"/admin/gateway/catalogmodel/{entry.pk}/change/").status_code == 200


def test_the_ledger_is_read_only_in_the_admin(staff):
    assert staff.get("/admin/billing/ledgerentry/").status_code == 200
    assert staff.get("/admin/billing/ledgerentry/add/").status_code == 403


def test_the_catalog_load_keeps_admin_edits_unless_reset():
    from decimal import Decimal

    from gateway.catalog import load_catalog

    CatalogModel.objects.filter(model_id="sandbox-chat", capability="chat").update(input_per_mtok=Decimal("9"))
    load_catalog()
    assert CatalogModel.objects.get(model_id="sandbox-chat", capability="chat").input_per_mtok == Decimal("9")
    load_catalog(reset=True)
    assert CatalogModel.objects.get(model_id="sandbox-chat", capability="chat").input_per_mtok == Decimal("0.10")
