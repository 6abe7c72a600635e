"""BBS credentials: issue at home, prove anywhere, disclose only what a policy needs.

    schema = CredentialSchema.load("credential_schema.toml")
    credential = issue_credential(schema, sk, pk, values)                 # home centre
    request = new_request(schema, "cloud-b", ["department"]); store.issue(request)   # verifier
    presentation = make_presentation(schema, credential, pk, request)     # holder
    request = store.consume(presentation.nonce)                           # verifier
    disclosed = verify_presentation(schema, presentation, request, index.issuer_key,
                                    index.revocation_epoch, now, verifier="cloud-b",
                                    issuer_known=lambda c: bool(index.issuer_keys(c)))
"""

from .credential import (
    DEFAULT_LIFETIME, Credential, generate_issuer_key, hour_floor, issue_credential, key_id,
)
from .errors import CODES, CredentialError, PresentationError, SchemaError
from .nonces import NonceStore
from .presentation import (
    REQUEST_TTL, Presentation, PresentationRequest, make_presentation, new_request, verify_presentation,
)
from .schema import ALWAYS_REQUESTED, HOLDER_SECRET, Attribute, CredentialSchema

__all__ = [
    "ALWAYS_REQUESTED", "Attribute", "CODES", "Credential", "CredentialError", "CredentialSchema",
    "DEFAULT_LIFETIME", "HOLDER_SECRET", "NonceStore", "Presentation", "PresentationError",
    "PresentationRequest", "REQUEST_TTL", "SchemaError", "generate_issuer_key", "hour_floor",
    "issue_credential", "key_id", "make_presentation", "new_request", "verify_presentation",
]
