"""Payment providers behind one interface, and the registry that picks and configures them.

With a provider's keys set, it talks to that provider (sandbox or live by key/base URL); in
local dev without keys, a local server that speaks the provider's API is started in-process
and the real client code is pointed at it.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from durable.errors import StartupRefused

from .base import Provider
from .mpesa import MpesaProvider
from .paypal import PayPalProvider
from .stripe import StripeProvider

log = logging.getLogger("rest_shop.providers")

METHODS = {"stripe": "stripe", "card": "stripe", "paypal": "paypal", "mpesa": "mpesa"}
SECRETS = {"stripe": ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"),
           "paypal": ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET", "PAYPAL_WEBHOOK_ID"),
           "mpesa": ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_PASSKEY", "MPESA_SHORTCODE",
                     "MPESA_CALLBACK_TOKEN")}


class MissingProviderSecrets(StartupRefused):
    """An enabled provider without its keys where local stand-ins are not allowed (production)."""


def enabled(env: Any) -> list[str]:
    names = [n.strip() for n in str(env.get("PAYMENT_PROVIDERS", "stripe,paypal,mpesa")).split(",") if n.strip()]
    unknown = [n for n in names if n not in SECRETS]
    if unknown:
        raise MissingProviderSecrets(f"PAYMENT_PROVIDERS names unknown provider(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(SECRETS)}")
    return names


def secret_problems(env: Any) -> list[str]:
    """Without local stand-ins, every enabled provider needs all its secrets: say which are missing."""
    if str(env.get("LOCAL_PROVIDERS", "auto")) == "auto":
        return []
    try:
        names = enabled(env)
    except MissingProviderSecrets as exc:
        return [str(exc)]
    missing = {n: [s for s in SECRETS[n] if not env.get(s)] for n in names}
    return [f"payment provider {n} is enabled without its secrets: {n} needs {', '.join(m)} (set them, or remove "
            f"{n} from PAYMENT_PROVIDERS)" for n, m in missing.items() if m]


class Providers:
    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.local_servers: dict[str, Any] = {}

    async def start(self, env: Any) -> None:
        """Each provider in PAYMENT_PROVIDERS: the real one with its keys, else (dev) a local server."""
        local_ok = str(env.get("LOCAL_PROVIDERS", "auto")) == "auto"
        wanted = enabled(env)
        problems = secret_problems(env)
        if problems:
            raise MissingProviderSecrets("; ".join(problems))
        timeout_s = float(env.get("PROVIDER_TIMEOUT_S", 10))
        for name in wanted:
            await getattr(self, f"_start_{name}")(env, local_ok, timeout_s)

    async def _start_local(self, name: str, server: Any, secret_name: str) -> str:
        url = await server.start()
        self.local_servers[name] = server
        log.warning("%s is not set: using the local %s server at %s", secret_name, server.title, url)
        return url

    async def _start_stripe(self, env: Any, local_ok: bool, timeout_s: float) -> None:
        key = env.get("STRIPE_SECRET_KEY")
        if key:
            self.providers["stripe"] = StripeProvider(key, env.get("STRIPE_WEBHOOK_SECRET"),
                                                      str(env.get("STRIPE_API_BASE", "https://api.stripe.com")),
                                                      timeout_s)
        elif local_ok:
            from ..local.stripe_server import LocalStripe
            local_key = f"sk_test_local_{secrets.token_hex(12)}"
            url = await self._start_local("stripe", LocalStripe(local_key), "STRIPE_SECRET_KEY")
            self.providers["stripe"] = StripeProvider(local_key, None, url, timeout_s)

    async def _start_paypal(self, env: Any, local_ok: bool, timeout_s: float) -> None:
        client_id, client_secret = env.get("PAYPAL_CLIENT_ID"), env.get("PAYPAL_CLIENT_SECRET")
        if client_id and client_secret:
            self.providers["paypal"] = PayPalProvider(
                client_id, client_secret, str(env.get("PAYPAL_API_BASE", "https://api-m.sandbox.paypal.com")),
                env.get("PAYPAL_WEBHOOK_ID"), timeout_s)
        elif local_ok:
            from ..local.paypal_server import LocalPayPal
            local_id, local_secret = f"local-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
            url = await self._start_local("paypal", LocalPayPal(local_id, local_secret), "PAYPAL_CLIENT_ID")
            self.providers["paypal"] = PayPalProvider(local_id, local_secret, url, None, timeout_s)

    async def _start_mpesa(self, env: Any, local_ok: bool, timeout_s: float) -> None:
        keys = [env.get(n) for n in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_PASSKEY", "MPESA_SHORTCODE")]
        callback_token = env.get("MPESA_CALLBACK_TOKEN") or secrets.token_urlsafe(24)
        if all(keys):
            self.providers["mpesa"] = MpesaProvider(*keys, str(env.get("MPESA_API_BASE",
                                                                       "https://sandbox.safaricom.co.ke")),
                                                    callback_token, timeout_s)
        elif local_ok:
            from ..local.mpesa_server import LocalMpesa
            key, secret, passkey, shortcode = secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(16), "174379"
            url = await self._start_local("mpesa", LocalMpesa(key, secret, shortcode, passkey), "MPESA_CONSUMER_KEY")
            self.providers["mpesa"] = MpesaProvider(key, secret, passkey, shortcode, url, callback_token, timeout_s)

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
