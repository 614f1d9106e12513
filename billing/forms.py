from __future__ import annotations

from decimal import Decimal

from django import forms

from billing.stripe_checkout import DEFAULT_RETURN_PATH, TopUpError, parse_amount, safe_return_path


class TopUpForm(forms.Form):
    """A preset button or a custom amount, plus where to come back to after Checkout."""

    amount_usd = forms.CharField(
        max_length=20,
        required=False,
        label="Amount (USD)",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "e.g. 20.00"}),
    )
    return_to = forms.CharField(max_length=500, required=False, widget=forms.HiddenInput)

    def clean_amount_usd(self) -> Decimal:
        try:
            return parse_amount(self.cleaned_data.get("amount_usd"))
        except TopUpError as exc:
            raise forms.ValidationError(exc.form_message, code="amount") from exc

    def clean_return_to(self) -> str:
        return safe_return_path(self.cleaned_data.get("return_to") or DEFAULT_RETURN_PATH)
