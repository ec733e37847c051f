"""Deadline notifications for alerts: e-mail over SMTP and a JSON webhook.

Settings come from the environment with the ``CSLEDGER_`` prefix (``CSLEDGER_SMTP_HOST``,
``CSLEDGER_ALERT_MAIL_TO``, ``CSLEDGER_ALERT_WEBHOOK_URL``, ...). A channel without settings is
simply not used. Messages carry the alert's rule, severity, summary, deadlines in the clinic's
local time, evidence entry seqs and figures: staff and patient *ids* only, never a patient's
name (alerts hold none).

The webhook body is signed with HMAC-SHA256 of the raw body under
``CSLEDGER_ALERT_WEBHOOK_SECRET`` (header ``X-Csledger-Signature: sha256=<hex>``) so the
receiver can tell it came from this deployment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.request
from email.message import EmailMessage
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.domain.alerts import local_time


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CSLEDGER_", extra="ignore")

    smtp_host: str = Field(default="", description="SMTP server; empty: no e-mail.")
    smtp_port: int = 25
    smtp_security: str = Field(default="none", description="none | starttls | ssl")
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    mail_from: str = "csledger@localhost"
    alert_mail_to: list[str] = Field(default_factory=list, description="Recipients of deadline e-mails.")
    alert_webhook_url: str = Field(default="", description="URL that receives a JSON POST per deadline alert.")
    alert_webhook_secret: SecretStr = SecretStr("")
    notify_timeout_seconds: int = 15


def _lines(registrant: dict[str, Any], alert: dict[str, Any]) -> list[str]:
    tz = registrant["time_zone"]
    out = [
        f"{registrant['name']} (DEA {registrant['dea_number']})",
        f"Alert {alert['alert_id']}: {alert['rule']}, severity {alert['severity']}",
        alert["summary"],
        "",
    ]
    for name, due in sorted(alert["deadlines"].items()):
        out.append(f"Due ({name}): {local_time(due, tz).strftime('%Y-%m-%d %H:%M %Z')}")
    out.append(f"Evidence: ledger entries {', '.join(str(s) for s in alert['evidence_seqs'])}")
    for k, v in sorted(alert["figures"].items()):
        out.append(f"  {k}: {v}")
    if alert["subjects"]:
        out.append(f"About staff: {', '.join(alert['subjects'])}")
    out += ["", f"Close it: csledger alerts resolve --dea {registrant['dea_number']} --alert {alert['alert_id']} ..."]
    return out


class Notifier:
    """Sends one alert on one channel; ``channels()`` lists the configured ones."""

    def __init__(self, settings: NotifySettings | None = None):
        self.settings = settings or NotifySettings()

    def channels(self) -> list[str]:
        s = self.settings
        out = []
        if s.smtp_host and s.alert_mail_to:
            out.append("email")
        if s.alert_webhook_url:
            out.append("webhook")
        return out

    def send(self, channel: str, registrant: dict[str, Any], alert: dict[str, Any]) -> str:
        if channel == "email":
            return self.send_email(registrant, alert)
        if channel == "webhook":
            return self.send_webhook(registrant, alert)
        raise ValueError(f"unknown channel {channel!r}")

    def message(self, registrant: dict[str, Any], alert: dict[str, Any]) -> EmailMessage:
        s = self.settings
        msg = EmailMessage()
        first_due = min(alert["deadlines"].values()) if alert["deadlines"] else None
        due = f", due {local_time(first_due, registrant['time_zone']).strftime('%Y-%m-%d')}" if first_due else ""
        msg["Subject"] = f"[csledger {registrant['dea_number']}] {alert['severity'].upper()} {alert['rule']}{due}"
        msg["From"] = s.mail_from
        msg["To"] = ", ".join(s.alert_mail_to)
        msg.set_content("\n".join(_lines(registrant, alert)) + "\n")
        return msg

    def send_email(self, registrant: dict[str, Any], alert: dict[str, Any]) -> str:
        s = self.settings
        msg = self.message(registrant, alert)
        if s.smtp_security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.notify_timeout_seconds,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.notify_timeout_seconds)
        with client:
            if s.smtp_security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                client.login(s.smtp_username, s.smtp_password.get_secret_value())
            refused = client.send_message(msg)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        return f"mailed to {', '.join(s.alert_mail_to)}"

    def payload(self, registrant: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
        keep = ("alert_id", "rule", "severity", "summary", "subjects", "parameters", "evidence_seqs", "figures",
                "deadlines", "raised_seq", "raised_at", "status")
        return {"type": "csledger.alert", "registrant": registrant["dea_number"],
                "alert": {k: alert[k] for k in keep}}

    def send_webhook(self, registrant: dict[str, Any], alert: dict[str, Any]) -> str:
        s = self.settings
        body = json.dumps(self.payload(registrant, alert), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "csledger-alerts"}
        secret = s.alert_webhook_secret.get_secret_value()
        if secret:
            headers["X-Csledger-Signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(s.alert_webhook_url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=s.notify_timeout_seconds) as resp:  # noqa: S310 - configured URL
            status = resp.status
        if not 200 <= status < 300:
            raise RuntimeError(f"webhook answered {status}")
        return f"webhook {status}"
