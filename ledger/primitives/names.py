"""Centre names: the short names members are known by, on chain and off.

A name is 1 to 32 characters of lowercase ASCII letters, digits and `-`, so
that it fits a bytes32 (`ledger.ids.centre_id`), a URL path and a Cedar
attribute unchanged. Every check of a centre name uses this module.
"""

from __future__ import annotations

import re
from typing import TypeGuard

#: The rule, as it reads in error messages: "must match [a-z0-9-]{1,32}".
CENTRE_NAME_RULE = "[a-z0-9-]{1,32}"
#: The same rule anchored, for JSON Schema and pydantic `pattern=` (which search rather than match).
CENTRE_NAME_PATTERN = f"^{CENTRE_NAME_RULE}$"

_CENTRE_NAME = re.compile(CENTRE_NAME_RULE)


def is_centre_name(value: object) -> TypeGuard[str]:
    """True for a string that is a whole centre name (no trailing newline, no upper case)."""
    return isinstance(value, str) and _CENTRE_NAME.fullmatch(value) is not None
