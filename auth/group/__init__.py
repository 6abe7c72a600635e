"""Anonymous transactions under supervision: group credentials, group signatures, threshold opening, DKG.

Pure functions on BLS12-381 (py_arkworks_bls12381), reusing auth.bbs's core:

    sk = new_member_secret()                                            # member's wallet
    req = join_request(sk, home="hpc-a", project="astro", member="alice")
    cred = issue_group_credential(isk, ipk, req, home="hpc-a", member="alice",
                                  revocation_epoch=0, expires_at=t)      # home (blind)
    sig = sign(cred, sk, ipk, Y, order_message(digest))                 # member
    signed = verify(sig, order_message(digest), issuer_pk_for=..., supervision_key=Y)
    share = decryption_share(x_i, i, signed.c1, pool_id)                # supervisor i, for a pool
    T = combine(signed.c2, shares)                                      # any t verified shares
    Y, xs = dkg.run_local(n, t)                                         # the key (dkg.py on chain)
"""

from . import dkg
from .credential import (
    GroupCredential,
    JoinRequest,
    blind_sign,
    check_join,
    issue_group_credential,
    join_request,
    new_member_secret,
    tracing_key,
)
from .errors import GroupError
from .opening import Share, combine, decryption_share, verify_share
from .points import g1_chain, g1_from_chain, g1_from_raw, g1_raw, lagrange_at_zero, random_scalar, scalar32
from .signature import (
    GroupSigned,
    ciphertext,
    order_message,
    parse,
    quote_message,
    sign,
    signature_hash,
    verify,
)

__all__ = [
    "GroupCredential",
    "GroupError",
    "GroupSigned",
    "JoinRequest",
    "Share",
    "blind_sign",
    "check_join",
    "ciphertext",
    "combine",
    "decryption_share",
    "dkg",
    "g1_chain",
    "g1_from_chain",
    "g1_from_raw",
    "g1_raw",
    "issue_group_credential",
    "join_request",
    "lagrange_at_zero",
    "new_member_secret",
    "order_message",
    "parse",
    "quote_message",
    "random_scalar",
    "scalar32",
    "sign",
    "signature_hash",
    "tracing_key",
    "verify",
    "verify_share",
]
