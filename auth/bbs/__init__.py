"""BBS signatures (draft-irtf-cfrg-bbs-signatures, fixtures of draft -06..-08).

from auth import bbs
sk = bbs.SHA256.keygen(key_material)
pk = bbs.SHA256.sk_to_pk(sk)
sig = bbs.SHA256.sign(sk, pk, header, messages)
proof = bbs.SHA256.proof_gen(pk, sig, header, ph, messages, disclosed_indexes)
"""

from .ciphersuite import BLS12_381_SHA_256, BLS12_381_SHAKE_256, Ciphersuite
from .errors import BBSError
from .interface import BBS

SHA256 = BBS(BLS12_381_SHA_256)
SHAKE256 = BBS(BLS12_381_SHAKE_256)

__all__ = ["BBS", "SHA256", "SHAKE256", "BBSError", "Ciphersuite"]
