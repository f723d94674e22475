"""What the access log and the request metrics say of one request, filled in as it goes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestRecord:
    """One request's record: made by its front door, filled in by the core and the error handling."""

    request_id: str
    variant: str = ""  # the variant (or variants, comma-separated) that answered; "" when none
    batch_size: int | None = None  # the largest batch its images shared
    error: str | None = None  # the error code of an error answer
    budget_met: bool | None = None  # variant=auto: whether the chosen variant fits the budget
