"""The HTTP API's own dependencies, as ``Annotated`` aliases (the shared ones are
``app.server.dependencies``'s).

:data:`TicketDep` is the ticket of a route whose ``variant`` query parameter names the variant
that answers: the one the request's head opened (``app/server/head_admission.py``), else opened
here: an unknown name, or one this process was not started with, is a 404, a variant that cannot
answer now a 503, an overloaded one a 429; ``auto`` lets the service choose by the request's
latency budget. The request's context closes the ticket when the request ends.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from ..core.ticket import Ticket
from ..server.dependencies import ContextDep, ServiceDep, SettingsDep
from .measured_figures import MeasuredFigures


async def get_measured(request: Request) -> MeasuredFigures:
    measured: MeasuredFigures = request.app.state.measured
    return measured


MeasuredDep = Annotated[MeasuredFigures, Depends(get_measured)]


async def get_ticket(
    variant: Annotated[
        str, Query(description="short or full variant name, e.g. attn1111-dcn, or auto (the service chooses by budget_ms)")
    ],
    service: ServiceDep,
    settings: SettingsDep,
    context: ContextDep,
    budget_ms: Annotated[
        float | None,
        Query(gt=0, description="variant=auto: latency budget in ms (default ATTNZOO_DEFAULT_BUDGET_MS)"),
    ] = None,
) -> Ticket:
    """The request's ticket for ``variant`` (see the module's docstring).

    Raises:
        UnknownVariantError, VariantNotServedError (404), VariantNotReadyError,
        NoVariantLoadedError (auto), BatcherClosedError (503), OverloadedError (429).
    """
    if context.ticket is not None:
        return context.ticket
    budget_s = budget_ms / 1000.0 if budget_ms is not None else None
    ticket = service.open_ticket(variant, record=context.record, budget_s=budget_s)
    context.tickets.append(ticket)
    return ticket


TicketDep = Annotated[Ticket, Depends(get_ticket)]


async def get_tickets(
    service: ServiceDep,
    context: ContextDep,
    variants: Annotated[
        list[str] | None,
        Query(description="short or full variant names, repeated or comma-separated; default: every loaded variant"),
    ] = None,
) -> list[Ticket]:
    """A ticket per named variant (default: every loaded one), closed when the request ends.

    Raises:
        UnknownVariantError, VariantNotServedError, VariantNotReadyError, NoVariantLoadedError, OverloadedError.
    """
    names = [name.strip() for value in variants or () for name in value.split(",") if name.strip()]
    tickets = service.open_tickets(names, record=context.record)
    context.tickets.extend(tickets)
    return tickets


TicketsDep = Annotated[list[Ticket], Depends(get_tickets)]
