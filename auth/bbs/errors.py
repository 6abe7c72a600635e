"""The one error type of the BBS package.

The draft's algorithms "return INVALID"; here that is a raised ``BBSError``.
It subclasses ValueError so callers of sign/proof_gen can catch the usual type,
while verify/proof_verify turn it into ``False``.
"""


class BBSError(ValueError):
    """An input is not valid for the BBS algorithm it was given to."""
