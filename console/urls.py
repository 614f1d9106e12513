from django.urls import include, path

from console import views, views_byok, views_usage

app_name = "console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.login_page, name="login"),
    path("login/check-email/", views.check_email, name="check_email"),
    path("login/magic/<str:token>/", views.magic_link_page, name="magic_link"),
    path("logout/", views.logout_view, name="logout"),
    path("projects/", views.projects, name="projects"),
    path("projects/<str:project_id>/rename/", views.rename_project, name="rename_project"),
    path("projects/<str:project_id>/select/", views.select_project, name="select_project"),
    path("keys/", views.keys_page, name="keys"),
    path("keys/<str:key_id>/revoke/", views.revoke_key, name="revoke_key"),
    path("usage/", views_usage.usage_page, name="usage"),
    path("byok/", views_byok.byok_page, name="byok"),
    path("byok/<str:byok_id>/test/", views_byok.byok_test, name="byok_test"),
    path("byok/<str:byok_id>/revoke/", views_byok.byok_revoke, name="byok_revoke"),
    path("playground/", include("playground.urls")),
    path("jobs/", include("jobs.urls")),
]
