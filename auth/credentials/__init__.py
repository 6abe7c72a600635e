"""BBS credentials: issue at home, prove anywhere, disclose only what a policy needs.

schema = CredentialSchema.load("credential_schema.toml")
credential = issue_credential(schema, sk, pk, values)                 # home centre
challenges = Challenges(schema, "cloud-b", ["department"])             # verifier, at start
request = challenges.issue()                                          # verifier: stores nothing
presentation = make_presentation(schema, credential, pk, request)     # holder
request = challenges.open(presentation.nonce, now=now)                # verifier
disclosed = verify_presentation(schema, presentation, request, index.issuer_key,
                                index.revocation_epoch, now, verifier="cloud-b",
                                issuer_known=lambda c: bool(index.issuer_keys(c)))
challenges.spend(request, now=now)                                    # one sign-on per request
"""

from .challenges import Challenges
from .credential import (
    DEFAULT_LIFETIME,
    Credential,
    generate_issuer_key,
    hour_floor,
    issue_credential,
    key_id,
)
from .errors import CODES, CredentialError, PresentationError, SchemaError
from .nonces import UsedNonces
from .presentation import (
    REQUEST_TTL,
    Presentation,
    PresentationRequest,
    make_presentation,
    new_request,
    request_attributes,
    verify_presentation,
)
from .schema import ALWAYS_REQUESTED, HOLDER_SECRET, Attribute, CredentialSchema

__all__ = [
    "ALWAYS_REQUESTED",
    "CODES",
    "DEFAULT_LIFETIME",
    "HOLDER_SECRET",
    "REQUEST_TTL",
    "Attribute",
    "Challenges",
    "Credential",
    "CredentialError",
    "CredentialSchema",
    "Presentation",
    "PresentationError",
    "PresentationRequest",
    "SchemaError",
    "UsedNonces",
    "generate_issuer_key",
    "hour_floor",
    "issue_credential",
    "key_id",
    "make_presentation",
    "new_request",
    "request_attributes",
    "verify_presentation",
]
