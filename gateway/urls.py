from django.urls import path, re_path

from gateway import views_account, views_ai, views_byok, views_capabilities, views_cost, views_docs, views_openai

app_name = "gateway"

urlpatterns = [
    path("account/keys", views_account.account_keys, name="account_keys"),
    path("account/keys/<str:key_id>", views_account.account_key_detail, name="account_key_detail"),
    path("account/balance", views_account.account_balance, name="account_balance"),
    path("account/topup", views_account.account_topup, name="account_topup"),
    path("account/byok", views_byok.byok_collection, name="account_byok"),
    path("account/byok/<str:byok_id>", views_byok.byok_detail, name="account_byok_detail"),
    path("account/byok/<str:byok_id>/test", views_byok.byok_test, name="account_byok_test"),
    path("account/byok/<str:byok_id>/revoke", views_byok.byok_revoke, name="account_byok_revoke"),
    path("ai/chat", views_ai.ai_chat, name="ai_chat"),
    path("ai/embed", views_capabilities.ai_embed, name="ai_embed"),
    path("ai/image", views_capabilities.ai_image, name="ai_image"),
    path("ai/image/upscale", views_capabilities.ai_upscale, name="ai_upscale"),
    path("ai/vision", views_capabilities.ai_vision, name="ai_vision"),
    path("ai/tts", views_capabilities.ai_tts, name="ai_tts"),
    path("ai/tts/voices", views_capabilities.tts_voices, name="ai_tts_voices"),
    path("ai/asr", views_capabilities.ai_asr, name="ai_asr"),
    path("ai/rerank", views_capabilities.ai_rerank, name="ai_rerank"),
    path("ai/tokens/count", views_capabilities.tokens_count, name="ai_tokens_count"),
    path("ai/cost/estimate", views_cost.cost_estimate, name="ai_cost_estimate"),
    path("ai/cost/compare", views_cost.cost_compare, name="ai_cost_compare"),
    path("ai/realtime/token", views_capabilities.realtime_token, name="ai_realtime_token"),
    path("ai/voice/session", views_capabilities.voice_session, name="ai_voice_session"),
    path("chat/completions", views_openai.chat_completions, name="chat_completions"),
    path("embeddings", views_capabilities.openai_embeddings, name="embeddings"),
    path("images/generations", views_capabilities.openai_images, name="images_generations"),
    path("audio/speech", views_capabilities.openai_speech, name="audio_speech"),
    path("audio/transcriptions", views_capabilities.openai_transcriptions, name="audio_transcriptions"),
    path("models", views_openai.list_models, name="models"),
    path("openapi.json", views_docs.openapi_json, name="openapi_json"),
    path("docs", views_docs.docs, name="docs"),
    re_path(r"^(?P<path>(ai|video|account|chat|embeddings|images|audio|models)(/.*)?)$", views_account.not_implemented),
    re_path(r"^(?P<path>.*)$", views_account.not_found),
]
