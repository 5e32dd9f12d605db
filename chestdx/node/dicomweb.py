"""Results sent by DICOMweb STOW-RS (dicomweb-client), beside or instead of C-STORE.

``--dicomweb URL`` names the service root (Orthanc's DICOMweb plugin: ``http://HOST:8042/dicom-web``).
Credentials in the URL (``http://user:password@host/...``) are sent as HTTP basic
authentication and never logged or written to ``status.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pydicom

from chestdx.errors import ChestDxError


@dataclass(frozen=True)
class DicomWebPeer:
    """A DICOMweb service to store the results in.

    Args:
        url: the service root, without credentials.
        username: for HTTP basic authentication, or None.
        password: its password (kept out of ``repr``).
        timeout: seconds to wait for the service per request.
        attempts: tries of a request that could not connect or was answered 408, 429, 503 or 504
            (1 s, then 2 s apart): the worker waits on them, so they are few.
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    attempts: int = 3

    @classmethod
    def parse(cls, text: str) -> "DicomWebPeer":
        """Args: text: ``http(s)://[user:password@]host[:port][/path]``. Returns: the peer. Raises: ChestDxError: malformed or no client."""
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChestDxError(f"--dicomweb {_redacted(text)!r} is not an http(s) URL of a DICOMweb service "
                               "(e.g. http://127.0.0.1:8042/dicom-web)")
        try:
            import dicomweb_client  # noqa: F401
        except ImportError:
            raise ChestDxError("--dicomweb needs dicomweb-client: pip install 'chestdx[dicom-out]'") from None
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        return cls(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None)

    def __str__(self) -> str:
        return f"DICOMweb {self.url}"

    def send(self, paths: list[Path], calling_ae: str | None = None) -> dict:
        """Store DICOM files with one STOW-RS request.

        Args:
            paths: the files.
            calling_ae: unused (the C-STORE peer's signature).

        Returns:
            ``{"stored": n}``: how many instances the service says it stored.

        Raises:
            ChestDxError: the service could not be reached, refused the request, or failed an instance.
        """
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        if self.username is not None:
            session.auth = (self.username, self.password or "")
        client = DICOMwebClient(url=self.url, session=session, timeout=self.timeout)
        client.set_http_retry_params(retry=self.attempts > 1, max_attempts=self.attempts, wait_exponential_multiplier=500)
        try:
            response = client.store_instances([pydicom.dcmread(path) for path in paths])
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            raise ChestDxError(f"{self} answered HTTP {code} to STOW-RS: check the URL (the service root, e.g. "
                               f".../dicom-web) and its credentials") from None
        except requests.RequestException as exc:
            raise ChestDxError(f"could not reach {self}: {type(exc).__name__}") from None
        finally:
            session.close()
        failed = response.get("FailedSOPSequence", [])
        if failed:
            reasons = sorted({hex(int(item.get("FailureReason", 0))) for item in failed})
            raise ChestDxError(f"{self} failed {len(failed)} of {len(paths)} instances (failure reasons "
                               f"{', '.join(reasons)})")
        return {"stored": len(response.get("ReferencedSOPSequence", []))}


def _redacted(text: str) -> str:
    """Args: text: a URL. Returns: it with any credentials before ``@`` replaced by ``***``."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return text
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
