from django.urls import path, re_path

from gateway import views_account, views_ai, views_openai

app_name = "gateway"

urlpatterns = [
    path("account/keys", views_account.account_keys, name="account_keys"),
    path("account/keys/<str:key_id>", views_account.account_key_detail, name="account_key_detail"),
    path("account/balance", views_account.account_balance, name="account_balance"),
    path("account/topup", views_account.account_topup, name="account_topup"),
    path("ai/chat", views_ai.ai_chat, name="ai_chat"),
    path("chat/completions", views_openai.chat_completions, name="chat_completions"),
    path("models", views_openai.list_models, name="models"),
    re_path(r"^(?P<path>(ai|video|account|chat|embeddings|images|audio|models)(/.*)?)$", views_account.not_implemented),
    re_path(r"^(?P<path>.*)$", views_account.not_found),
]
