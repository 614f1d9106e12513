from django.urls import path

from playground import consumers

websocket_urlpatterns = [
    path("ws/events/", consumers.AccountEventsConsumer.as_asgi()),
    path("ws/playground/", consumers.PlaygroundConsumer.as_asgi()),
    path("ws/voice/", consumers.VoiceConsumer.as_asgi()),
]
