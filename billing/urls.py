from django.urls import path

from billing import views, webhooks

app_name = "billing"

urlpatterns = [
    path("", views.billing_page, name="index"),
    path("history.csv", views.history_csv, name="history_csv"),
    path("topup/", views.topup, name="topup"),
    path("topup/<str:topup_id>/success/", views.topup_success, name="topup_success"),
    path("topup/<str:topup_id>/cancel/", views.topup_cancel, name="topup_cancel"),
    path("topup/<str:topup_id>/status/", views.topup_status, name="topup_status"),
    path("stripe/webhook/", webhooks.stripe_webhook, name="stripe_webhook"),
]
