"""Jobs pages, included by console/urls.py: their names live in the `console` namespace."""

from django.urls import path

from jobs import actions, views

urlpatterns = [
    path("", views.job_list, name="jobs"),
    path("batch/<str:batch_id>/", views.batch_detail, name="job_batch"),
    path("batch/<str:batch_id>/download/", views.batch_download, name="job_batch_download"),
    *[
        path(f"batch/<str:batch_id>/{name}/", views.batch_action, {"action": name}, name=f"job_batch_{name}")
        for name in actions.BATCH_ACTIONS
    ],
    path("video/<str:job_id>/", views.video_detail, name="job_video"),
    path("video/<str:job_id>/download/", views.video_download, name="job_video_download"),
    *[
        path(f"video/<str:job_id>/{name}/", views.video_action, {"action": name}, name=f"job_video_{name}")
        for name in actions.VIDEO_ACTIONS
    ],
]
