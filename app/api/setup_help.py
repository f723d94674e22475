"""What to tell a user whose checkpoints are missing: where to put which file, and the way out.

One sentence, shown by ``/readyz`` and ``/models`` (``hint``) and so by the page.
"""

from __future__ import annotations

from typing import Iterable

from ..core.pool import VariantSlot

# Named here and shown by the page; the flag itself belongs to `attnzoo serve`.
DEMO_COMMAND = "attnzoo serve --demo"


def missing_weights_hint(slots: Iterable[VariantSlot]) -> str | None:
    """What to do about the variants among ``slots`` whose checkpoint is missing; None when none is."""
    missing = [slot.missing_weights for slot in slots if slot.missing_weights is not None]
    if not missing:
        return None
    files = ", ".join(item.file for item in missing)
    return (
        f"checkpoint files missing: put {files} into the weights dir (ATTNZOO_WEIGHTS_DIR; the service's log names it; "
        "`attnzoo fetch` downloads them from the registry's URLs), "
        f"then restart the service; or run `{DEMO_COMMAND}` to serve synthetic stand-in weights"
    )
