"""Console pages: sign-in, dashboard, projects and keys. Rules live in accounts.py/keys.py."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from billing import ledger
from console import accounts, keys, magic_link
from console.forms import EmailLoginForm, KeyForm, ProjectForm
from console.models import Account, Project

PROJECT_SESSION_KEY = "project"


def _account(request: HttpRequest) -> Account:
    return accounts.ensure_account(request.user)  # type: ignore[arg-type]


def current_project(request: HttpRequest, account: Account) -> Project:
    public_id = request.session.get(PROJECT_SESSION_KEY)
    if public_id:
        project = account.projects.filter(public_id=public_id).first()
        if project:
            return project
    return accounts.default_project(account)


def base_url(request: HttpRequest) -> str:
    from django.conf import settings

    return settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")


# --- Sign-in ----------------------------------------------------------------------------------


def login_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("console:dashboard")
    form = EmailLoginForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            magic_link.request_link(form.cleaned_data["email"], request.META.get("REMOTE_ADDR"), base_url(request))
        except magic_link.RateLimited as exc:
            form.add_error("email", str(exc))
            return render(request, "console/login.html", {"form": form}, status=429)
        request.session["magic_email"] = form.cleaned_data["email"]
        return redirect("console:check_email")
    return render(request, "console/login.html", {"form": form}, status=400 if form.errors else 200)


def check_email(request: HttpRequest) -> HttpResponse:
    return render(request, "console/check_email.html", {"email": request.session.get("magic_email", "")})


def magic_link_page(request: HttpRequest, token: str) -> HttpResponse:
    # GET only shows a button: mail scanners that prefetch links must not use up the link.
    if request.method == "POST":
        user = magic_link.redeem(token)
        if user is not None:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("console:dashboard")
    elif magic_link.peek(token) is not None:
        return render(request, "console/magic_confirm.html", {"token": token})
    return render(request, "console/magic_invalid.html", status=400)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("console:login")


# --- Dashboard --------------------------------------------------------------------------------


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    project = current_project(request, account)
    return render(
        request,
        "console/dashboard.html",
        {
            "account": account,
            "project": project,
            "balance": ledger.get_balance(account),
            "keys": project.keys.filter(revoked_at__isnull=True)[:5],
            "base_url": base_url(request),
            "nav": "dashboard",
        },
    )


# --- Projects ---------------------------------------------------------------------------------


@login_required
def projects(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = accounts.create_project(account, form.cleaned_data["name"])
        except accounts.ProjectNameTaken:
            form.add_error("name", "You already have a project with this name.")
        else:
            request.session[PROJECT_SESSION_KEY] = project.public_id
            messages.success(request, f"Project “{project.name}” created and selected.")
            return redirect("console:projects")
    return render(
        request,
        "console/projects.html",
        {
            "form": form,
            "projects": account.projects.all(),
            "project": current_project(request, account),
            "nav": "projects",
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def rename_project(request: HttpRequest, project_id: str) -> HttpResponse:
    account = _account(request)
    project = accounts.get_project(account, project_id)
    form = ProjectForm(request.POST)
    if form.is_valid():
        try:
            accounts.rename_project(project, form.cleaned_data["name"])
        except accounts.ProjectNameTaken:
            messages.error(request, "You already have a project with this name.")
        else:
            messages.success(request, "Project renamed.")
    else:
        messages.error(request, "; ".join(e for errs in form.errors.values() for e in errs))
    return redirect("console:projects")


@login_required
@require_POST
def select_project(request: HttpRequest, project_id: str) -> HttpResponse:
    project = accounts.get_project(_account(request), project_id)
    request.session[PROJECT_SESSION_KEY] = project.public_id
    target = request.POST.get("next", "")
    if not target.startswith("/") or not url_has_allowed_host_and_scheme(
        target, {request.get_host()}, request.is_secure()
    ):
        target = "console:dashboard"  # never off-site: a crafted `next` would make this an open redirect
    return redirect(target)


# --- Keys -------------------------------------------------------------------------------------


NEW_KEY_SESSION_KEY = "new_key_secret"


@login_required
def keys_page(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    project = current_project(request, account)
    form = KeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # Post/redirect/get: the secret rides in the session for exactly one page view, so a
        # reload of the page that shows it cannot create a second key.
        request.session[NEW_KEY_SESSION_KEY] = keys.create_key(project, label=form.cleaned_data["label"]).secret
        return redirect("console:keys")
    new_secret = request.session.pop(NEW_KEY_SESSION_KEY, None)
    return render(
        request,
        "console/keys.html",
        {
            "form": form,
            "project": project,
            "keys": project.keys.all(),
            "new_secret": new_secret,
            "base_url": base_url(request),
            "nav": "keys",
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def revoke_key(request: HttpRequest, key_id: str) -> HttpResponse:
    key = accounts.get_key(_account(request), key_id)
    if keys.revoke_key(key):
        messages.success(request, f"Key {key.display_prefix}… revoked. Calls with it are refused from now on.")
    return redirect("console:keys")
