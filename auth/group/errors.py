"""The one error type of the group-signature package.

Every refusal (a malformed encoding, a point off the curve or outside the
subgroup, a proof that does not verify, an unknown issuer key) is a
``GroupError`` whose message says what was wrong, so a gateway can turn it
into a 4xx that a person can act on. It subclasses ValueError like BBSError.
"""


class GroupError(ValueError):
    """An input to a group-signature, opening or key-generation function is not valid."""
