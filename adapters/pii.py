"""PII masking moved to :mod:`router.pii`, where the envelope producer runs it on every
envelope before Kafka; this module re-exports it for the channel adapters."""

from ..router.pii import (
    PII_KINDS,
    MaskResult,
    PiiPolicy,
    UnmaskedAccess,
    bank_card_valid,
    id_card_shaped,
    id_card_valid,
    load_pii_policy,
    mask_envelope,
    mask_pii,
)

__all__ = [
    "PII_KINDS",
    "MaskResult",
    "PiiPolicy",
    "UnmaskedAccess",
    "bank_card_valid",
    "id_card_shaped",
    "id_card_valid",
    "load_pii_policy",
    "mask_envelope",
    "mask_pii",
]
