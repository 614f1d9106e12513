from __future__ import annotations

from django import forms


class EmailLoginForm(forms.Form):
    email = forms.EmailField(
        max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True})
    )


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not name:
            raise forms.ValidationError("Give the project a name.")
        return name


class KeyForm(forms.Form):
    label = forms.CharField(
        max_length=80, required=False, strip=True, help_text="Where this key will be used, e.g. 'staging backend'."
    )
