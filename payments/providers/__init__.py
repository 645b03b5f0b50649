"""Payment providers behind one interface, and the registry that picks and configures them.

With a provider's keys set, it talks to that provider (sandbox or live by key/base URL); in
local dev without keys, a local server that speaks the provider's API is started in-process
and the real client code is pointed at it.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from .base import Provider
from .mpesa import MpesaProvider
from .paypal import PayPalProvider
from .stripe import StripeProvider

log = logging.getLogger("rest_shop.providers")

METHODS = {"stripe": "stripe", "card": "stripe", "paypal": "paypal", "mpesa": "mpesa"}


class Providers:
    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.local_servers: dict[str, Any] = {}

    async def start(self, env: Any) -> None:
        local_ok = str(env.get("LOCAL_PROVIDERS", "auto")) == "auto"
        key = env.get("STRIPE_SECRET_KEY")
        timeout_s = float(env.get("PROVIDER_TIMEOUT_S", 10))
        if key:
            self.providers["stripe"] = StripeProvider(key, env.get("STRIPE_WEBHOOK_SECRET"),
                                                      str(env.get("STRIPE_API_BASE", "https://api.stripe.com")),
                                                      timeout_s)
        elif local_ok:
            from ..local.stripe_server import LocalStripe
            local_key = f"sk_test_local_{secrets.token_hex(12)}"
            server = LocalStripe(local_key)
            url = await server.start()
            self.local_servers["stripe"] = server
            self.providers["stripe"] = StripeProvider(local_key, None, url, timeout_s)
            log.warning("STRIPE_SECRET_KEY is not set: using the local Stripe server at %s", url)
        client_id, client_secret = env.get("PAYPAL_CLIENT_ID"), env.get("PAYPAL_CLIENT_SECRET")
        if client_id and client_secret:
            self.providers["paypal"] = PayPalProvider(
                client_id, client_secret, str(env.get("PAYPAL_API_BASE", "https://api-m.sandbox.paypal.com")),
                env.get("PAYPAL_WEBHOOK_ID"), timeout_s)
        elif local_ok:
            from ..local.paypal_server import LocalPayPal
            local_id, local_secret = f"local-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
            server = LocalPayPal(local_id, local_secret)
            url = await server.start()
            self.local_servers["paypal"] = server
            self.providers["paypal"] = PayPalProvider(local_id, local_secret, url, None, timeout_s)
            log.warning("PAYPAL_CLIENT_ID is not set: using the local PayPal server at %s", url)
        mpesa = [env.get(n) for n in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_PASSKEY", "MPESA_SHORTCODE")]
        callback_token = env.get("MPESA_CALLBACK_TOKEN") or secrets.token_urlsafe(24)
        if all(mpesa):
            self.providers["mpesa"] = MpesaProvider(*mpesa, str(env.get("MPESA_API_BASE",
                                                                        "https://sandbox.safaricom.co.ke")),
                                                    callback_token, timeout_s)
        elif local_ok:
            from ..local.mpesa_server import LocalMpesa
            key, secret, passkey, shortcode = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(16), "174379"
            server = LocalMpesa(key, secret, shortcode, passkey)
            url = await server.start()
            self.local_servers["mpesa"] = server
            self.providers["mpesa"] = MpesaProvider(key, secret, passkey, shortcode, url, callback_token, timeout_s)
            log.warning("MPESA_CONSUMER_KEY is not set: using the local M-Pesa (Daraja) server at %s", url)

    async def stop(self) -> None:
        for provider in self.providers.values():
            close = getattr(provider, "close", None)
            if close is not None:
                await close()
        for server in self.local_servers.values():
            await server.stop()
        self.local_servers.clear()
        self.providers.clear()

    def for_method(self, method: str) -> Provider | None:
        return self.providers.get(METHODS.get(method, method))


registry = Providers()
