"""DRF's rate throttles, failing open: when the cache that counts requests (Redis) cannot be
reached, a request is let through and the failure logged, since refusing every read while
Redis is down would turn a cache outage into a full outage (tests/faults/test_redis_down.py).
They share the response cache's breaker (`catalog.cache.shared`): once a call failed, Redis is
not tried again for HUB_CACHE_RETRY_SECONDS, so a hung Redis costs no request its timeout."""

from __future__ import annotations

from rest_framework import throttling

from hub_server.catalog.cache import shared


class FailOpenMixin:
    def allow_request(self, request, view) -> bool:
        if shared.backend is not None and shared.usable() is None:
            return True  # Redis failed a moment ago: not counted until it is tried again
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - the counter is unreachable: let it through
            shared.failed(exc)
            return True


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle):
    pass
