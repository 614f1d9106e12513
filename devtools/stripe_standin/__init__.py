"""A local Stripe for development and tests: localstripe plus Checkout Sessions.

Run it with ``python -m devtools.stripe_standin --port 8420 --webhook-url URL --webhook-secret S``;
``make run`` starts it when no real STRIPE_SECRET_KEY is set (see infrai/devserver.py).
"""
