"""Google Drive folders and files through the Drive v3 REST API, read with Range requests.

Accepted forms: `https://drive.google.com/drive/folders/<id>` (also `/drive/u/0/folders/<id>?usp=…`),
`https://drive.google.com/file/d/<id>/view`, `https://drive.google.com/open?id=<id>` and `gdrive://<id>`.

Credentials, first found wins: `GOOGLE_APPLICATION_CREDENTIALS` (a service-account or authorized-user
JSON file), `GOOGLE_OAUTH_ACCESS_TOKEN` (a bearer token), gcloud's application-default credentials
file, `GOOGLE_API_KEY` (public files only); otherwise requests go out unauthenticated (test stand-ins).
`GOOGLE_DRIVE_API_URL` replaces `https://www.googleapis.com` as the API base.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ...core.errors import DattavaniError, InvalidOptionError, OutputError, UnreadablePathError
from ..writers import OUTPUT_SUBDIR
from .base import SourceItem
from .http import missing_extra, one_line
from .local import is_media

if TYPE_CHECKING:
    import requests

API_URL_VARIABLE = "GOOGLE_DRIVE_API_URL"
DEFAULT_API_URL = "https://www.googleapis.com"
TOKEN_VARIABLE = "GOOGLE_OAUTH_ACCESS_TOKEN"
API_KEY_VARIABLE = "GOOGLE_API_KEY"
SCOPES = ["https://www.googleapis.com/auth/drive"]
FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_MIME = "application/vnd.google-apps."
FILE_FIELDS = "id,name,mimeType,size,md5Checksum,modifiedTime,parents"
PAGE_SIZE = 1000
DEFAULT_BLOCK_SIZE = 1 << 20
TIMEOUT = (30.0, 120.0)  # connect, read (seconds)
RETRY_STATUSES = (429, 500, 502, 503, 504)
TRANSCRIPT_MIME = {"srt": "application/x-subrip", "vtt": "text/vtt", "json": "application/json"}

_ID = r"[A-Za-z0-9_-]+"
_PATH_ID = re.compile(rf"/(?:folders|file(?:/u/\d+)?/d)/({_ID})")
_BARE_ID = re.compile(rf"^{_ID}$")


def drive_id(spec: str) -> str | None:
    """The file/folder id in a Drive URL or `gdrive://<id>`, or None when `spec` is not one."""
    if spec.startswith("gdrive://"):
        candidate = spec.removeprefix("gdrive://").strip("/")
        return candidate if _BARE_ID.match(candidate) else None
    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != "drive.google.com":
        return None
    match = _PATH_ID.search(parts.path)
    if match:
        return match.group(1)
    ids = parse_qs(parts.query).get("id", [])
    return ids[0] if ids and _BARE_ID.match(ids[0]) else None


def quote_query(value: str) -> str:
    """`value` as a Drive query string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _adc_file() -> Path:
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path.home() / ".config" / "gcloud")
    return Path(config) / "application_default_credentials.json"


def _credentials() -> Any:
    """google-auth credentials from a JSON key file, or None when none is configured."""
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or (str(_adc_file()) if _adc_file().is_file() else "")
    if not path or os.environ.get(TOKEN_VARIABLE):
        return None
    try:
        import google.auth
        import google.auth.exceptions
    except ImportError as exc:
        raise missing_extra("Google Drive sources", exc) from exc
    try:
        credentials, _ = google.auth.load_credentials_from_file(path, scopes=SCOPES)  # type: ignore[no-untyped-call]
    except (OSError, ValueError, google.auth.exceptions.DefaultCredentialsError) as exc:
        raise InvalidOptionError(f"{path}: unusable Google credentials ({one_line(exc)})") from exc
    return credentials


def make_session() -> requests.Session:
    """A requests session that authenticates (refreshing tokens) and retries rate limits and 5xx."""
    try:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry
    except ImportError as exc:
        raise missing_extra("Google Drive sources", exc) from exc
    credentials = _credentials()
    if credentials is not None:
        from google.auth.transport.requests import AuthorizedSession

        session: requests.Session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    else:
        session = requests.Session()
        if os.environ.get(TOKEN_VARIABLE):
            session.headers["Authorization"] = f"Bearer {os.environ[TOKEN_VARIABLE]}"
    retry = Retry(
        total=5,
        connect=2,  # a refused connection is a wrong address, not a hiccup: fail within a second
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "PATCH"}),
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=32)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _api_message(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["message"]).splitlines()[0][:200]
    except (ValueError, KeyError, TypeError, IndexError):
        return response.reason or ""


class DriveClient:
    """The few Drive v3 calls the source and sink need. Thread-safe (one pooled session)."""

    def __init__(self, api_url: str | None = None, session: requests.Session | None = None) -> None:
        self.api_url = (api_url or os.environ.get(API_URL_VARIABLE) or DEFAULT_API_URL).rstrip("/")
        self._session = session
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = make_session()
            return self._session

    def request(
        self,
        method: str,
        path: str,
        *,
        upload: bool = False,
        error: type[DattavaniError] = UnreadablePathError,
        **kwargs: Any,
    ) -> requests.Response:
        """`method` on `/drive/v3<path>` (or `/upload/drive/v3<path>`); a failure raises `error`, one line."""
        session = self.session  # first: reports a missing optional dependency plainly
        import requests

        url = f"{self.api_url}{'/upload' if upload else ''}/drive/v3{path}"
        params = {"supportsAllDrives": "true", **kwargs.pop("params", {})}
        if os.environ.get(API_KEY_VARIABLE):
            params["key"] = os.environ[API_KEY_VARIABLE]
        try:
            response = session.request(method, url, params=params, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise error(f"Google Drive API unreachable at {self.api_url} ({one_line(exc)})") from exc
        if response.status_code >= 400:
            raise error(self._failure(path, response))
        return response

    @staticmethod
    def _failure(path: str, response: requests.Response) -> str:
        what = f"gdrive://{path.split('/')[2]}" if path.startswith("/files/") else "Google Drive"
        status = response.status_code
        if status == 404:
            return f"{what}: not found, or not shared with this account (HTTP 404)"
        hint = "; set GOOGLE_APPLICATION_CREDENTIALS" if status in (401, 403) else ""
        return f"{what}: HTTP {status} {_api_message(response)}{hint}"

    def metadata(self, file_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/files/{file_id}", params={"fields": FILE_FIELDS})
        return dict(response.json())

    def search(self, query: str, error: type[DattavaniError] = UnreadablePathError) -> Iterator[dict[str, Any]]:
        """Every file matching the Drive query `query`, page after page."""
        params = {
            "q": query,
            "fields": f"nextPageToken,files({FILE_FIELDS})",
            "pageSize": str(PAGE_SIZE),
            "includeItemsFromAllDrives": "true",
            "orderBy": "name",
        }
        while True:
            page = self.request("GET", "/files", params=params, error=error).json()
            yield from page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def children(self, folder_id: str) -> Iterator[dict[str, Any]]:
        return self.search(f"{quote_query(folder_id)} in parents and trashed=false")

    def fetch(self, file_id: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file's content (one Range request)."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        response = self.request("GET", f"/files/{file_id}", params={"alt": "media"}, headers=headers)
        if response.status_code == 206:
            return response.content
        return response.content[start:end]  # the server ignored Range and sent everything

    def create(self, name: str, parent: str, mime: str, data: bytes | None = None) -> str:
        """A new file (multipart upload) or, without `data`, a folder; returns its id."""
        metadata = json.dumps({"name": name, "parents": [parent], "mimeType": mime.partition(";")[0]})
        params = {"fields": "id"}
        if data is None:
            headers = {"Content-Type": "application/json; charset=UTF-8"}
            response = self.request("POST", "/files", params=params, data=metadata, headers=headers, error=OutputError)
            return str(response.json()["id"])
        boundary = f"dattavani-{uuid.uuid4().hex}"
        body = (
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n"
                f"--{boundary}\r\nContent-Type: {mime}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/related; boundary={boundary}"}
        params["uploadType"] = "multipart"
        response = self.request(
            "POST", "/files", upload=True, params=params, data=body, headers=headers, error=OutputError
        )
        return str(response.json()["id"])

    def update(self, file_id: str, mime: str, data: bytes) -> str:
        """Replace a file's content (a new revision: same id, same place)."""
        params = {"uploadType": "media", "fields": "id"}
        headers = {"Content-Type": mime}
        path = f"/files/{file_id}"
        response = self.request(
            "PATCH", path, upload=True, params=params, data=data, headers=headers, error=OutputError
        )
        return str(response.json()["id"])


class RangeReader(io.RawIOBase):
    """A seekable raw stream over `fetch(start, end)`; wrap it in `io.BufferedReader` for block reads."""

    def __init__(self, client: DriveClient, file_id: str, size: int) -> None:
        super().__init__()
        self.client = client
        self.file_id = file_id
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self.position + len(view))
        if end <= self.position:
            return 0
        data = self.client.fetch(self.file_id, self.position, end)
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def _is_audio(entry: dict[str, Any]) -> bool:
    mime = str(entry.get("mimeType", ""))
    if mime.startswith(GOOGLE_APPS_MIME):
        return False
    return mime.startswith(("audio/", "video/")) or is_media(Path(str(entry["name"])))


def _safe(name: str) -> str:
    return name.replace("/", "_") or "_"


def drive_item(entry: dict[str, Any], relative: PurePosixPath, parent_id: str | None, root: str) -> SourceItem:
    """A Drive file found under the folder `root` (the id its spec named) at `relative`."""
    size = entry.get("size")
    parents = entry.get("parents") or [None]
    return SourceItem(
        uri=f"gdrive://{entry['id']}",
        name=_safe(str(entry["name"])),
        relative=relative,
        size=int(size) if size is not None else None,
        version=str(entry.get("md5Checksum") or entry.get("modifiedTime") or f"size:{size}"),
        parent_id=parent_id or parents[0],
        space="gdrive",
        root=PurePosixPath("/", root),
    )


class DriveSource:
    """A Drive folder (recursively, skipping Google Docs and `gen-transcript` folders) or one file."""

    def __init__(self, client: DriveClient | None = None, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.client = client or DriveClient()
        self.block_size = block_size
        self._sink: DriveSink | None = None

    def matches(self, spec: str) -> bool:
        return drive_id(spec) is not None

    def expand(self, spec: str, pattern: str | None) -> Iterator[SourceItem]:
        file_id = drive_id(spec)
        if file_id is None:
            raise InvalidOptionError(f"{spec}: not a Google Drive folder or file address")
        entry = self.client.metadata(file_id)
        mime = str(entry.get("mimeType", ""))
        if mime == FOLDER_MIME:
            yield from self._walk(file_id, PurePosixPath(), pattern, {file_id})
        elif mime.startswith(GOOGLE_APPS_MIME):
            raise UnreadablePathError(f"{spec}: a Google Workspace document ({mime}), not an audio file")
        else:
            parents = entry.get("parents") or [file_id]
            yield drive_item(entry, PurePosixPath(_safe(str(entry["name"]))), None, str(parents[0]))

    def _walk(self, folder_id: str, prefix: PurePosixPath, pattern: str | None, seen: set[str]) -> Iterator[SourceItem]:
        """`seen` holds the spec's folder id first (the root of every item) and every folder walked."""
        root = next(iter(seen))
        seen.add(folder_id)
        entries = sorted(self.client.children(folder_id), key=lambda entry: (str(entry["name"]), str(entry["id"])))
        for entry in entries:
            name = _safe(str(entry["name"]))
            if _is_audio(entry) and (pattern is None or fnmatch(name, pattern)):
                yield drive_item(entry, prefix / name, folder_id, root)
        for entry in entries:
            name = str(entry["name"])
            skip = name == OUTPUT_SUBDIR or name.startswith(".") or entry["id"] in seen
            if entry.get("mimeType") == FOLDER_MIME and not skip:
                yield from self._walk(str(entry["id"]), prefix / _safe(name), pattern, seen)

    def open(self, item: SourceItem) -> IO[bytes]:
        file_id = drive_id(item.uri)
        if file_id is None:
            raise UnreadablePathError(f"{item.uri}: not a Google Drive file")
        size = item.size
        if size is None:
            raw_size = self.client.metadata(file_id).get("size")
            if raw_size is None:
                raise UnreadablePathError(f"{item.uri}: Drive reports no size (not a binary file)")
            size = int(raw_size)
        return io.BufferedReader(RangeReader(self.client, file_id, size), buffer_size=self.block_size)

    def default_sink(self) -> DriveSink:
        if self._sink is None:
            self._sink = DriveSink(self.client)
        return self._sink


class DriveFolders:
    """Finds or creates named folders under a parent, once per (parent, name) even across threads."""

    def __init__(self, client: DriveClient) -> None:
        self.client = client
        self._known: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def find(self, name: str, parent: str, folder: bool) -> str | None:
        kind = "=" if folder else "!="
        query = (
            f"name = {quote_query(name)} and {quote_query(parent)} in parents and trashed=false "
            f"and mimeType {kind} {quote_query(FOLDER_MIME)}"
        )
        for entry in self.client.search(query, error=OutputError):
            return str(entry["id"])
        return None

    def child(self, parent: str, name: str) -> str:
        with self._lock:
            if (parent, name) not in self._known:
                found = self.find(name, parent, folder=True)
                self._known[parent, name] = found or self.client.create(name, parent, FOLDER_MIME)
            return self._known[parent, name]

    def upload(self, folder: str, filename: str, content: str) -> str:
        """`filename` in `folder`: a new revision of an existing file of that name, else a new file."""
        fmt = filename.rsplit(".", 1)[-1]
        mime = f"{TRANSCRIPT_MIME.get(fmt, 'text/plain')}; charset=utf-8"
        data = content.encode("utf-8")
        existing = self.find(filename, folder, folder=False)
        if existing:
            file_id = self.client.update(existing, mime, data)
        else:
            file_id = self.client.create(filename, folder, mime, data)
        return f"https://drive.google.com/file/d/{file_id}/view"


class DriveSink:
    """Uploads `<filename>` into a `gen-transcript` folder beside the source file.

    The folder is found (by name, parent and folder type) or created once, and remembered; an existing
    transcript of the same name gets a new revision instead of a duplicate. One upload is atomic.
    """

    def __init__(self, client: DriveClient) -> None:
        self.client = client
        self.folders = DriveFolders(client)

    def folder_for(self, parent: str) -> str:
        """The id of `gen-transcript` under `parent`, created if missing (once, even across threads)."""
        return self.folders.child(parent, OUTPUT_SUBDIR)

    def target(self, item: SourceItem, filename: str) -> str:
        return f"gdrive://{item.parent_id or item.uri}/{OUTPUT_SUBDIR}/{filename}"

    def write(self, item: SourceItem, filename: str, content: str) -> str:
        parent = item.parent_id
        if parent is None:
            file_id = drive_id(item.uri)
            parents = self.client.metadata(file_id).get("parents") if file_id else None
            if not parents:
                raise OutputError(f"{item.uri}: no parent Drive folder to write beside; use --output-dir")
            parent = str(parents[0])
        return self.folders.upload(self.folder_for(parent), filename, content)


class DriveTreeSink:
    """Mirrors items under a Drive folder given as `--output-dir` (its subfolders found or created)."""

    def __init__(self, client: DriveClient, folder_id: str) -> None:
        self.folder_id = folder_id
        self.folders = DriveFolders(client)

    def target(self, item: SourceItem, filename: str) -> str:
        return "/".join(["gdrive:/", self.folder_id, *item.relative.parent.parts, filename])

    def write(self, item: SourceItem, filename: str, content: str) -> str:
        folder = self.folder_id
        for name in item.relative.parent.parts:
            folder = self.folders.child(folder, name)
        return self.folders.upload(folder, filename, content)
