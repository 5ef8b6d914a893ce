"""Bearer tokens of the admin API, stored as SHA-256 hashes in a JSON file.

A token is `smgw_<id>_<secret>`, where the secret is 32 random bytes in
URL-safe base64. The file keeps the id, the role and the SHA-256 of the whole
token, never the token itself, so reading the file does not grant access. The
id lets a lookup find the entry without comparing against every hash; the
hash comparison is constant-time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from smimegw.settings import Settings

_PREFIX = "smgw"
_ID_BYTES = 6
_SECRET_BYTES = 32


class Role(enum.StrEnum):
    READ = "read"
    READ_WRITE = "read-write"


class TokenStoreError(Exception):
    """The token file cannot be read or written."""


@dataclass(frozen=True)
class TokenEntry:
    token_id: str
    role: Role
    sha256: str
    created: str
    name: str = ""

    def public(self) -> dict[str, str]:
        """Return the entry without its hash, for listings."""
        return {
            "id": self.token_id,
            "role": str(self.role),
            "name": self.name,
            "created": self.created,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The token file; re-read when it changes, so new tokens apply at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, TokenEntry] = {}
        self._stamp: tuple[int, int] | None = None

    def create(self, role: Role, name: str = "") -> tuple[TokenEntry, str]:
        """Add a token and return its entry and the token, shown only now."""
        token_id = secrets.token_hex(_ID_BYTES)
        token = f"{_PREFIX}_{token_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        entry = TokenEntry(
            token_id=token_id,
            role=role,
            sha256=_digest(token),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            name=name,
        )
        entries = dict(self._load())
        entries[token_id] = entry
        self._write(entries)
        return entry, token

    def revoke(self, token_id: str) -> bool:
        entries = dict(self._load())
        if entries.pop(token_id, None) is None:
            return False
        self._write(entries)
        return True

    def entries(self) -> list[TokenEntry]:
        return sorted(self._load().values(), key=lambda e: e.created)

    def verify(self, token: str) -> Role | None:
        """Return the role of `token`, or None when it is unknown or malformed."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not token_id or not secret:
            return None
        entry = self._load().get(token_id)
        if entry is None:
            return None
        if not hmac.compare_digest(_digest(token), entry.sha256):
            return None
        return entry.role

    def _load(self) -> dict[str, TokenEntry]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._entries, self._stamp = {}, None
            return self._entries
        except OSError as err:
            raise TokenStoreError(
                f"token file {str(self.path)!r} cannot be read ({err.strerror})"
            ) from err
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._entries = self._parse()
            self._stamp = stamp
        return self._entries

    def _parse(self) -> dict[str, TokenEntry]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [
                TokenEntry(**{**item, "role": Role(item["role"])})
                for item in raw["tokens"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TokenStoreError(
                f"token file {str(self.path)!r} is not a token list written by "
                f"`smimegw admin token create` ({type(err).__name__}); restore or "
                "remove it and create the tokens again"
            ) from err
        return {entry.token_id: entry for entry in entries}

    def _write(self, entries: dict[str, TokenEntry]) -> None:
        """Replace the file atomically with mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        data = {"tokens": [asdict(e) for e in entries.values()]}
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        self._stamp = None


def token_store(settings: Settings) -> TokenStore:
    """Open the token file of `settings`: `admin.tokens_file` or the default."""
    path = settings.admin.tokens_file or settings.data_dir / "admin-tokens.json"
    return TokenStore(path)
