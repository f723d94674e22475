"""The guard of the model-control endpoints: ``Authorization: Bearer <ATTNZOO_ADMIN_TOKEN>``.

No token configured: every control request is refused (403), so a service is never controllable
by accident. A missing or wrong token: 401. The comparison takes the same time whatever the
given token is (``secrets.compare_digest``).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..server.dependencies import SettingsDep

# auto_error=False: a missing token is answered by the service's own 401 (JSON body,
# WWW-Authenticate), not FastAPI's 403; the scheme still shows in OpenAPI ("Authorize" on /docs).
bearer_token = HTTPBearer(auto_error=False, scheme_name="adminToken", description="ATTNZOO_ADMIN_TOKEN")


class ModelControlDisabledError(Exception):
    """No admin token is configured."""


class NotAuthorizedError(Exception):
    """The request carries no bearer token, or the wrong one."""

    headers = {"WWW-Authenticate": 'Bearer realm="attnzoo model control"'}


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_token)],
) -> None:
    """Raises ModelControlDisabledError (403) or NotAuthorizedError (401) unless the token matches."""
    if settings.admin_token is None:
        raise ModelControlDisabledError("model control is off: start the service with ATTNZOO_ADMIN_TOKEN set")
    given = credentials.credentials.strip() if credentials is not None else ""
    expected = settings.admin_token.get_secret_value()
    if not given or not secrets.compare_digest(given.encode(), expected.encode()):
        raise NotAuthorizedError("send the admin token as 'Authorization: Bearer <ATTNZOO_ADMIN_TOKEN>'")
