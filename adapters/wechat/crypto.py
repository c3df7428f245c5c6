"""WeChat message encryption ("safe mode"), shared by Official Accounts and WeCom.

AES-256-CBC; key = base64decode(EncodingAESKey + "="); IV = the key's first 16
bytes; PKCS#7 padding to 32-byte blocks; plaintext = 16 random bytes +
4-byte big-endian length + message + receive id (the OA appid or the WeCom
corp id). The ciphertext travels base64-encoded in ``<Encrypt>``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ...router.exceptions import BadRequest, Unauthorized

__all__ = ["BLOCK_BYTES", "MessageCipher"]

BLOCK_BYTES: Final = 32  # WeChat pads to 32 bytes, not AES's 16
MAX_CIPHERTEXT_CHARS: Final = 1_400_000  # base64 of ~1 MiB; bodies are limited before this


class MessageCipher:
    """Encrypts and decrypts WeChat / WeCom message payloads for one account.

    Args:
        encoding_aes_key: The 43-character EncodingAESKey.
        receive_id: The appid (Official Account) or corp id (WeCom) that must
            trail every decrypted payload.
    """

    __slots__ = ("_key", "receive_id")

    def __init__(self, encoding_aes_key: str, receive_id: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("EncodingAESKey is not base64") from None
        if len(encoding_aes_key) != 43 or len(key) != 32:
            raise ValueError("EncodingAESKey must be 43 base64 characters (32 bytes)")
        self._key = key
        self.receive_id = receive_id

    def __repr__(self) -> str:
        return f"MessageCipher(receive_id={self.receive_id!r})"

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, message: bytes, random16: bytes | None = None) -> str:
        """Base64 ciphertext of ``message`` (used for replies and by tests)."""
        rnd = os.urandom(16) if random16 is None else random16
        if len(rnd) != 16:
            raise ValueError("random16 must be 16 bytes")
        plain = rnd + len(message).to_bytes(4, "big") + message + self.receive_id.encode()
        pad = BLOCK_BYTES - len(plain) % BLOCK_BYTES
        plain += bytes([pad]) * pad
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(plain) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside ``encrypted``.

        Raises:
            BadRequest: not base64, not whole AES blocks, bad padding or length
                (reason ``bad_ciphertext``).
            Unauthorized: the trailing receive id is not this account's
                (reason ``wrong_app_id``).
        """
        if not encrypted or len(encrypted) > MAX_CIPHERTEXT_CHARS:
            raise BadRequest("Encrypt is empty or too long", reason="bad_ciphertext")
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("Encrypt is not base64", reason="bad_ciphertext") from None
        if not raw or len(raw) % 16:
            raise BadRequest("Encrypt is not whole AES blocks", reason="bad_ciphertext")
        dec = self._cipher().decryptor()
        plain = dec.update(raw) + dec.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK_BYTES or plain[-pad:] != bytes([pad]) * pad:
            raise BadRequest("Encrypt has bad padding (wrong key?)", reason="bad_ciphertext")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise BadRequest("Encrypt is too short", reason="bad_ciphertext")
        length = int.from_bytes(plain[16:20], "big")
        if length > len(plain) - 20:
            raise BadRequest("Encrypt has a bad length field", reason="bad_ciphertext")
        message = plain[20 : 20 + length]
        receive_id = plain[20 + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise Unauthorized(
                "the decrypted receive id does not match this account's app id / corp id",
                reason="wrong_app_id",
            )
        return message
