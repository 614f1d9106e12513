"""Console page for BYOK credentials: list, register, test, revoke. Rules live in gateway/byok.py.

The API key is write-only here too: after registering, the page redirects and shows only the
fingerprint; a form with errors never renders the key back.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from console import accounts
from console.models import Account
from gateway import byok
from gateway.models_byok import BYOKCredential

# The API's field names -> this form's.
FORM_FIELDS = {
    "provider": "provider",
    "alias": "alias",
    "credentials": "api_key",
    "credentials.api_key": "api_key",
    "credentials.base_url": "base_url",
}


class BYOKForm(forms.Form):
    provider = forms.ChoiceField(choices=())
    alias = forms.CharField(
        max_length=byok.MAX_ALIAS_LENGTH, strip=True, help_text="A name you will recognise, e.g. 'team OpenAI'."
    )
    api_key = forms.CharField(
        label="API key",
        max_length=byok.MAX_API_KEY_LENGTH,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="Stored encrypted; after this it is shown only as a fingerprint.",
    )
    base_url = forms.CharField(
        label="Base URL (optional)",
        max_length=byok.MAX_BASE_URL_LENGTH,
        required=False,
        strip=True,
        widget=forms.TextInput(attrs={"placeholder": "https://api.example.com/v1", "inputmode": "url"}),
        help_text="Only for a non-default endpoint; required for an OpenAI-compatible endpoint.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = byok.provider_choices()


def _account(request: HttpRequest) -> Account:
    return accounts.ensure_account(request.user)  # type: ignore[arg-type]


def _get(account: Account, byok_id: str) -> BYOKCredential:
    record = byok.credentials_for_account(account).filter(public_id=byok_id).first()
    if record is None:
        raise Http404("No such credential")
    return record


@sensitive_variables("form", "registration")
def _register(request: HttpRequest, account: Account, form: BYOKForm) -> BYOKCredential | None:
    data = form.cleaned_data
    credentials = {"api_key": data["api_key"], "base_url": data["base_url"] or None}
    try:
        registration = byok.clean_registration(data["provider"], data["alias"], credentials)
        return byok.register(account, registration)
    except byok.InvalidCredential as exc:
        form.add_error(FORM_FIELDS.get(exc.field, None), exc.message)
        return None


@sensitive_post_parameters("api_key")
@login_required
def byok_page(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    form = BYOKForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        record = _register(request, account, form)
        if record is not None:
            messages.success(
                request,
                f"Registered “{record.alias}” ({record.fingerprint}). Calls for {record.provider} now use it.",
            )
            return redirect("console:byok")
    return render(
        request,
        "console/byok.html",
        {
            "form": form,
            "credentials": byok.credentials_for_account(account).filter(revoked_at__isnull=True),
            "nav": "byok",
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def byok_test(request: HttpRequest, byok_id: str) -> HttpResponse:
    record = _get(_account(request), byok_id)
    try:
        result = async_to_sync(byok.probe_and_store)(record)
    except byok.NotTestable as exc:
        messages.error(request, str(exc))
    else:
        if result.ok:
            messages.success(request, f"“{record.alias}” works: the provider answered in {result.latency_ms} ms.")
        else:
            messages.error(request, f"“{record.alias}” failed its test: {result.error}")
    return redirect("console:byok")


@login_required
@require_POST
def byok_revoke(request: HttpRequest, byok_id: str) -> HttpResponse:
    record = _get(_account(request), byok_id)
    if byok.revoke(record):
        successor = byok.credentials_for_account(record.account).filter(
            provider=record.provider, revoked_at__isnull=True
        )
        then = f"your credential “{successor[0].alias}”" if successor else "the shared pool, where available"
        messages.success(
            request, f"“{record.alias}” revoked and its key erased. Calls for {record.provider} now use {then}."
        )
    return redirect("console:byok")
