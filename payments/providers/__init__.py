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
from durable.dev.local_servers import claim
from durable.observe import otel

from .. import metrics
from .base import Provider
from .mpesa import MpesaProvider
from .paypal import PayPalProvider
from .stripe import StripeProvider
from .traced import Traced

log = logging.getLogger("rest_shop.providers")

METHODS = {"stripe": "stripe", "card": "stripe", "paypal": "paypal", "mpesa": "mpesa"}
SECRETS = {"stripe": ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"),
           "paypal": ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET", "PAYPAL_WEBHOOK_ID"),
           "mpesa": ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_PASSKEY", "MPESA_SHORTCODE",
                     "MPESA_CALLBACK_TOKEN")}


# the keys whose absence (in dev, with LOCAL_PROVIDERS = "auto") means: use a local server
LOCAL_TRIGGER = {"stripe": ("STRIPE_SECRET_KEY",), "paypal": ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET"),
                 "mpesa": ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_PASSKEY", "MPESA_SHORTCODE")}


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
        """Each provider in PAYMENT_PROVIDERS: the real one with its keys, else (dev) a local server,
        shared with the other processes of this dev state (the nodes of `wrangler dev --nodes`)."""
        local_ok = str(env.get("LOCAL_PROVIDERS", "auto")) == "auto"
        wanted = enabled(env)
        problems = secret_problems(env)
        if problems:
            raise MissingProviderSecrets("; ".join(problems))
        timeout_s = float(env.get("PROVIDER_TIMEOUT_S", 10))
        local_names = [n for n in wanted if local_ok and not all(env.get(s) for s in LOCAL_TRIGGER[n])]
        local: dict[str, dict[str, str]] = {}
        if local_names:
            local = await claim(env.state_dir, local_names, self._start_local_servers)
        for name in wanted:
            getattr(self, f"_use_{name}")(env, local.get(name), timeout_s)
        for name in self.providers:  # at 0 from the start: the rejected-webhooks alert sees the first one
            metrics.WEBHOOKS.labels(name, "rejected")
        if otel.enabled():  # each provider call a client span of the request's trace
            self.providers = {name: Traced(provider) for name, provider in self.providers.items()}

    async def _start_local_servers(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Start a local server for each provider; their URLs and (generated) keys."""
        started: dict[str, dict[str, str]] = {}
        for name in names:
            if name == "stripe":
                from ..local.stripe_server import LocalStripe
                keys = {"key": f"sk_test_local_{secrets.token_hex(12)}"}
                server: Any = LocalStripe(keys["key"])
            elif name == "paypal":
                from ..local.paypal_server import LocalPayPal
                keys = {"id": f"local-{secrets.token_hex(6)}", "secret": secrets.token_urlsafe(24)}
                server = LocalPayPal(keys["id"], keys["secret"])
            else:
                from ..local.mpesa_server import LocalMpesa
                keys = {"key": secrets.token_hex(8), "secret": secrets.token_hex(8), "passkey": secrets.token_hex(16),
                        "shortcode": "174379", "callback_token": secrets.token_urlsafe(24)}
                server = LocalMpesa(keys["key"], keys["secret"], keys["shortcode"], keys["passkey"])
            url = await server.start()
            self.local_servers[name] = server
            log.warning("%s is not set: using the local %s server at %s", LOCAL_TRIGGER[name][0], server.title, url)
            started[name] = {"url": url, **keys}
        return started

    def _use_stripe(self, env: Any, local: dict[str, str] | None, timeout_s: float) -> None:
        if local is None:
            self.providers["stripe"] = StripeProvider(env.get("STRIPE_SECRET_KEY"), env.get("STRIPE_WEBHOOK_SECRET"),
                                                      str(env.get("STRIPE_API_BASE", "https://api.stripe.com")),
                                                      timeout_s)
        else:
            self.providers["stripe"] = StripeProvider(local["key"], None, local["url"], timeout_s)

    def _use_paypal(self, env: Any, local: dict[str, str] | None, timeout_s: float) -> None:
        if local is None:
            self.providers["paypal"] = PayPalProvider(
                env.get("PAYPAL_CLIENT_ID"), env.get("PAYPAL_CLIENT_SECRET"),
                str(env.get("PAYPAL_API_BASE", "https://api-m.sandbox.paypal.com")),
                env.get("PAYPAL_WEBHOOK_ID"), timeout_s)
        else:
            self.providers["paypal"] = PayPalProvider(local["id"], local["secret"], local["url"], None, timeout_s)

    def _use_mpesa(self, env: Any, local: dict[str, str] | None, timeout_s: float) -> None:
        if local is None:
            keys = [env.get(n) for n in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_PASSKEY",
                                         "MPESA_SHORTCODE")]
            callback_token = env.get("MPESA_CALLBACK_TOKEN") or secrets.token_urlsafe(24)
            self.providers["mpesa"] = MpesaProvider(*keys, str(env.get("MPESA_API_BASE",
                                                                       "https://sandbox.safaricom.co.ke")),
                                                    callback_token, timeout_s)
        else:
            self.providers["mpesa"] = MpesaProvider(local["key"], local["secret"], local["passkey"],
                                                    local["shortcode"], local["url"],
                                                    env.get("MPESA_CALLBACK_TOKEN") or local["callback_token"],
                                                    timeout_s)

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
