"""Symmetric encryption of gossip traffic: a keyring of AES keys used through AES-GCM (from `cryptography`).

Design choices, after HashiCorp memberlist's ``security.go``/``keyring.go``:

- One *primary* key seals everything; any installed key may open. Rotating a cluster key is then three steps with no
  outage: install the new key everywhere (`add`), switch primaries (`use`), remove the old key (`remove`).
- A sealed message is ``version(1) | nonce(12) | ciphertext | tag(16)``. The version byte comes from a range that no
  plaintext message type uses (``0xE0..0xEF``), so a receiver can tell sealed from plain by looking at one byte: a node
  with a keyring refuses plaintext, a node without one refuses sealed data, and both count what they drop instead of
  feeding ciphertext to the decoder.
- The version byte and a caller-chosen *context* (packet vs stream) are authenticated as associated data, so a
  captured datagram cannot be replayed as a stream frame or under another version.
- GCM needs unique nonces per key; 96 random bits from the OS per message keep the collision probability negligible
  for the message counts a gossip cluster produces between key rotations. Unlike memberlist we do not pad: GCM is a
  stream mode and padding only costs bytes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rumor.gossip.errors import GossipError

SEAL_VERSION = 0xE1
"""Version byte of the only sealed format so far (AES-GCM, 12-byte random nonce, 16-byte tag)."""

SEALED_RANGE = range(0xE0, 0xF0)
"""First-byte values reserved for sealed formats; plaintext message types must stay outside this range."""

NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
"""Bytes a seal adds to a message (29): subtract from a datagram budget when encryption is on."""

KEY_SIZES = (16, 24, 32)

CONTEXT_PACKET = b"rumor-gossip-packet"
CONTEXT_STREAM = b"rumor-gossip-stream"


class SecurityError(GossipError):
    """Root of the keyring's errors."""


class InvalidKeyError(SecurityError, ValueError):
    """A key is not 16, 24 or 32 bytes long (AES-128/192/256)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"AES keys are 16, 24 or 32 bytes, got {length}")
        self.length = length


class KeyringError(SecurityError, ValueError):
    """A keyring operation would leave the ring unusable (removing the primary, using an unknown key)."""


class DecryptError(SecurityError, ValueError):
    """Data could not be opened; ``reason`` is a short stable label used as a drop counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_sealed(data: bytes) -> bool:
    """True if ``data`` looks like a sealed message (its first byte is in the reserved sealed range)."""
    return len(data) > 0 and data[0] in SEALED_RANGE


def _check_key(key: bytes) -> bytes:
    key = bytes(key)
    if len(key) not in KEY_SIZES:
        raise InvalidKeyError(len(key))
    return key


class Keyring:
    """A primary key that seals and opens, plus decrypt-only keys kept during a rotation.

    ``failures`` counts failed opens by reason so an operator can see a misconfigured peer without logs.
    """

    def __init__(self, primary: bytes, extra: Sequence[bytes] = ()) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        self.failures: Counter[str] = Counter()
        self._install(_check_key(primary), primary=True)
        for key in extra:
            self.add(key)

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def keys(self) -> list[bytes]:
        """All installed keys, primary first (a copy: mutate through the methods)."""
        return list(self._keys)

    def add(self, key: bytes) -> None:
        """Install a decrypt-only key (idempotent)."""
        self._install(_check_key(key), primary=False)

    def use(self, key: bytes) -> None:
        """Make an already installed key the primary; the old primary stays installed for decryption."""
        key = _check_key(key)
        if key not in self._ciphers:
            raise KeyringError("cannot use a key that is not installed; add it first")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def rotate(self, new_primary: bytes) -> None:
        """Install ``new_primary`` and seal with it from now on; older keys still open what peers send meanwhile."""
        self.add(new_primary)
        self.use(new_primary)

    def remove(self, key: bytes) -> None:
        """Forget a decrypt-only key. Removing the primary is refused: the ring would have nothing to seal with."""
        key = _check_key(key)
        if key == self._keys[0]:
            raise KeyringError("cannot remove the primary key; rotate to another key first")
        if key in self._ciphers:
            self._keys.remove(key)
            del self._ciphers[key]

    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        """Encrypt and authenticate with the primary key; ``context`` must match on `open`."""
        nonce = os.urandom(NONCE_BYTES)
        header = bytes((SEAL_VERSION,))
        body = self._ciphers[self._keys[0]].encrypt(nonce, plaintext, header + context)
        return header + nonce + body

    def open(self, data: bytes, context: bytes = b"") -> bytes:
        """Authenticate and decrypt with the primary, then each decrypt-only key; raise `DecryptError` if none fits."""
        try:
            return self._open(data, context)
        except DecryptError as exc:
            self.failures[exc.reason] += 1
            raise

    def _open(self, data: bytes, context: bytes) -> bytes:
        if not data:
            raise DecryptError("empty")
        if data[0] != SEAL_VERSION:
            if data[0] in SEALED_RANGE:
                raise DecryptError("unsupported_version", f"sealed version {data[0]:#x}")
            raise DecryptError("not_sealed", f"first byte {data[0]:#x}")
        if len(data) < SEAL_OVERHEAD:
            raise DecryptError("too_short", f"{len(data)} bytes")
        header, nonce, body = data[:1], data[1 : 1 + NONCE_BYTES], data[1 + NONCE_BYTES :]
        for key in self._keys:
            try:
                return self._ciphers[key].decrypt(nonce, body, header + context)
            except InvalidTag:
                continue
        raise DecryptError("no_matching_key", f"tried {len(self._keys)} key(s)")

    def _install(self, key: bytes, primary: bool) -> None:
        if key not in self._ciphers:
            self._ciphers[key] = AESGCM(key)
            self._keys.append(key)
        if primary:
            self._keys.remove(key)
            self._keys.insert(0, key)

    def __repr__(self) -> str:
        return f"Keyring(keys={len(self._keys)})"
