"""Email through the Django backend (SMTP in production, the SMTP catcher in compose)."""

from __future__ import annotations

import smtplib

from django.core.mail import send_mail

from .base import Channel, Delivered, PermanentFailure, TemporaryFailure


class EmailChannel(Channel):
    name = "email"

    def send(self, notification) -> Delivered:
        addresses = [r for r in notification.recipients if "@" in str(r)]
        if not addresses:
            raise PermanentFailure("nobody with an email address holds the role")
        try:
            send_mail(notification.subject, notification.body, None, addresses)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(f"recipients refused: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(f"mail server: {exc}") from None
        return Delivered(detail=", ".join(addresses))
