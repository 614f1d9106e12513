"""Playground pages, included by console/urls.py: their names live in the `console` namespace."""

from django.urls import path

from playground import views, views_video, views_voice

urlpatterns = [
    path("", views.chat_page, name="playground"),
    path("chat/", views.chat_send, name="playground_chat_send"),
    path("compare/", views.compare_page, name="playground_compare"),
    path("compare/run/", views.compare_send, name="playground_compare_send"),
    path("image/", views.image_page, name="playground_image"),
    path("image/generate/", views.image_generate, name="playground_image_generate"),
    path("image/upscale/", views.image_upscale, name="playground_image_upscale"),
    path("image/vision/", views.image_vision, name="playground_image_vision"),
    path("video/", views_video.video_page, name="playground_video"),
    path("video/generate/", views_video.video_generate, name="playground_video_generate"),
    path("video/estimate/", views_video.video_estimate, name="playground_video_estimate"),
    path("video/jobs/", views_video.video_jobs, name="playground_video_jobs"),
    path("video/jobs/<str:job_id>/", views_video.video_job, name="playground_video_job"),
    path("video/jobs/<str:job_id>/cancel/", views_video.video_cancel, name="playground_video_cancel"),
    path("voice/", views_voice.voice_page, name="playground_voice"),
    path("voice/token/", views_voice.voice_token, name="playground_voice_token"),
    path("cost/", views.cost_page, name="playground_cost"),
    path("cost/compare/", views.cost_compare, name="playground_cost_compare"),
]
