from django.contrib import admin
from django.urls import include, path

from gateway.views_files import signed_file

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/", include("social_django.urls", namespace="social")),
    path("v1/", include("gateway.urls")),
    path("files/<str:token>", signed_file, name="signed_file"),
    path("billing/", include("billing.urls")),
    path("", include("console.urls")),
]
