"""DRF's rate throttles, failing open: when the cache that counts requests (Redis) cannot be
reached, a request is let through and the failure logged, since refusing every read while
Redis is down would turn a cache outage into a full outage (tests/faults/test_redis_down.py)."""

from __future__ import annotations

import logging

from rest_framework import throttling

log = logging.getLogger(__name__)


class FailOpenMixin:
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:  # noqa: BLE001 - the counter is unreachable: let the request through
            log.warning("throttle %s could not count; allowed", type(self).__name__, exc_info=True)
            return True


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle):
    pass
