"""Settings of the clinic-floor pages, read from the environment (prefix ``CSLEDGER_WEB_``).

The session lifetime and idle timeout are the API's (``CSLEDGER_SESSION_IDLE_MINUTES``...): a page
session is an API session whose token lives in an HttpOnly cookie instead of a header.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CSLEDGER_WEB_", extra="ignore")

    cookie_secure: bool = Field(
        default=True,
        description="Send the session cookie only over HTTPS. Turn off only for loopback tests "
                    "(CSLEDGER_WEB_COOKIE_SECURE=0), never in a deployment.")
