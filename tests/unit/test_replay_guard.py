"""The replay guard's memory is one process's: what it cannot know (a signature stamped before the
process started) it refuses, and when its live nonces fill it, it refuses new calls instead of
forgetting a nonce that could still be replayed."""
from __future__ import annotations

import pytest

from durable.signing import NonceCache, NonceCacheFull, SignatureError, Signed


def test_a_signature_stamped_before_the_process_started_is_refused() -> None:
    """The reproduction: a call captured 30 s before a restart was good once more in the new process."""
    cache = NonceCache(60, started_at=1_000.4)
    with pytest.raises(SignatureError, match="before this process started"):
        cache.check_and_remember(Signed(970, "captured"), now=1_001.0)
    cache.check_and_remember(Signed(1_000, "same-second"), now=1_001.0)  # stamps are whole seconds
    cache.check_and_remember(Signed(1_001, "fresh"), now=1_001.0)


def test_a_full_cache_refuses_new_calls_rather_than_forget_live_nonces() -> None:
    """The reproduction: past max_entries the oldest live nonce was evicted, and its replay accepted."""
    cache = NonceCache(60, max_entries=3, started_at=0)
    for i in range(3):
        cache.check_and_remember(Signed(1_000, f"n{i}"), now=1_000.0)
    with pytest.raises(NonceCacheFull):
        cache.check_and_remember(Signed(1_000, "n3"), now=1_001.0)
    with pytest.raises(SignatureError, match="replayed"):
        cache.check_and_remember(Signed(1_000, "n0"), now=1_002.0)  # still remembered
    cache.check_and_remember(Signed(1_061, "n4"), now=1_061.0)  # once they lapse, room again


def test_an_expired_nonce_behind_a_live_one_makes_room_when_the_cache_is_full() -> None:
    cache = NonceCache(60, max_entries=2, started_at=0)
    cache.check_and_remember(Signed(1_050, "later-stamp"), now=1_000.0)   # lives until 1110
    cache.check_and_remember(Signed(1_000, "earlier-stamp"), now=1_000.0)  # lives until 1060
    cache.check_and_remember(Signed(1_070, "new"), now=1_070.0)  # the second had lapsed: it goes
