"""fsspec access for state, records and artifacts: atomic writes, exclusive creates, local fast paths.

Local paths use the OS directly (temp file + fsync + rename; O_EXCL for exclusive create). Object stores
use a single PUT (atomic by nature) and conditional create (If-None-Match) for locks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from mlspec.errors import MlspecError

# Exceptions of the cloud SDKs, by class name (the SDKs are imported only when a remote store is used)
_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "DefaultCredentialsError", "RefreshError", "ClientAuthenticationError", "NoAuthHandlerFound"}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError",
                "ProxyConnectionError", "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError",
                "ServerTimeoutError", "ClientOSError", "ConnectionRefusedError", "ConnectionResetError",
                "gaierror", "ServiceRequestError", "ConnectionError", "TimeoutError"}
_DENIED_WORDS = ("AccessDenied", "Access Denied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
                 "InvalidToken", "ExpiredToken", "AuthorizationPermissionMismatch", "AuthenticationFailed")
_SDK_MODULES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "aiohttp", "google", "azure", "urllib3",
                "fsspec")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _where_to_set(scheme: str, what: str) -> str:
    if what == "credentials":
        return {"s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or storage.options.key "
                      "and storage.options.secret",
                "gs": "set GOOGLE_APPLICATION_CREDENTIALS, or storage.options.token",
                "gcs": "set GOOGLE_APPLICATION_CREDENTIALS, or storage.options.token",
                "az": "set AZURE_STORAGE_CONNECTION_STRING, or storage.options.account_name and "
                      "storage.options.account_key",
                "abfs": "set AZURE_STORAGE_CONNECTION_STRING, or storage.options.account_name and "
                        "storage.options.account_key"}.get(scheme, "set the store's credentials in storage.options")
    if scheme == "s3":
        return ("check storage.options.endpoint_url (or storage.options.client_kwargs.endpoint_url) and the "
                "network; storage.options.config_kwargs sets connect_timeout and retries")
    return "check the endpoint in storage.options and the network"


def storage_error(exc: BaseException, url: str, options: Mapping | None = None, action: str = "use"
                  ) -> MlspecError | None:
    """A storage failure as a one-line MlspecError naming ``url`` and what to set; None when ``exc`` is not
    a storage failure the user can fix (a missing object, an existing one: the caller's business)."""
    chain = _chain(exc)
    names = {k.__name__ for e in chain for k in type(e).__mro__}
    text = " ".join(str(e) for e in chain)
    first = next((ln.strip() for e in chain for ln in str(e).splitlines() if ln.strip()), type(exc).__name__)
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    options = options or {}
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
    at = f" at {endpoint}" if endpoint else ""
    if names & _CREDENTIALS:
        return MlspecError(f"cannot {action} {url}: no credentials for the {scheme}:// store were found",
                           hint=_where_to_set(scheme, "credentials"))
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        bucket = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else url
        return MlspecError(f"cannot {action} {url}: the bucket '{bucket}' does not exist{at}",
                           hint="create it, or fix the bucket name in storage.state / storage.artifacts")
    if isinstance(exc, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)):
        return None
    if isinstance(exc, PermissionError) or any(w in text for w in _DENIED_WORDS):
        if scheme == "file":
            return MlspecError(f"cannot {action} {url}: permission denied",
                               hint="check the file and directory permissions")
        return MlspecError(f"cannot {action} {url}: access denied{at} ({first})",
                           hint="check that the credentials in use are valid and allowed here ("
                                + _where_to_set(scheme, "credentials") + ")")
    if names & _UNREACHABLE or "Could not connect to the endpoint URL" in text:
        return MlspecError(f"cannot {action} {url}: the storage endpoint{at} is unreachable ({first})",
                           hint=_where_to_set(scheme, "endpoint"))
    from_sdk = any(type(e).__module__.split(".")[0] in _SDK_MODULES for e in chain)
    if from_sdk or (isinstance(exc, OSError) and scheme != "file"):
        return MlspecError(f"cannot {action} {url}: {type(exc).__name__}: {first}",
                           hint="check storage.state / storage.artifacts and storage.options")
    if isinstance(exc, OSError):
        return MlspecError(f"cannot {action} {url}: {exc.strerror or first}")
    return None


class _Guard:
    """``with _Guard(url, options, action):`` turns a storage failure into an MlspecError (see storage_error)."""

    def __init__(self, url: str, options: Mapping, action: str):
        self.url, self.options, self.action = url, options, action

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, MlspecError):
            return False
        err = storage_error(exc, self.url, self.options, self.action)
        if err is None:
            return False
        raise err from exc


class _GuardedFS:
    """An fsspec filesystem whose method calls (and the files they open) report storage failures as
    MlspecErrors: callers that use ``Location.fs`` directly (artifacts) get the same one-line errors."""

    def __init__(self, fs, location: "Location"):
        self._fs, self._loc = fs, location

    def __getattr__(self, name):
        attr = getattr(self._fs, name)
        if not callable(attr):
            return attr
        loc = self._loc

        def call(*args, **kwargs):
            scheme, _, root = loc.url.rpartition("://")
            bucket = root.split("/", 1)[0]
            path = next((a for a in args if isinstance(a, str) and a.split("://", 1)[-1].startswith(bucket)),
                        loc.url)
            url = path if "://" in path or loc.local else f"{scheme}://{path}"
            mode = args[1] if name == "open" and len(args) > 1 else kwargs.get("mode", "rb")
            action = {"open": "write" if set(str(mode)) & set("wxa") else "read", "put_file": "write",
                      "put": "write", "pipe": "write", "get_file": "read", "get": "read", "cat": "read",
                      "cat_file": "read", "rm": "delete", "rm_file": "delete", "ls": "list"}.get(name, "access")
            with _Guard(url, loc.options, action):
                out = attr(*args, **kwargs)
            if name == "open":
                return _GuardedFile(out, url, loc.options, action)
            return out
        return call


class _GuardedFile:
    def __init__(self, fh, url: str, options: Mapping, action: str):
        self._fh, self._url, self._options, self._action = fh, url, options, action

    def __getattr__(self, name):
        attr = getattr(self._fh, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with _Guard(self._url, self._options, self._action):
                return attr(*args, **kwargs)
        return call

    def __iter__(self):
        return iter(self._fh)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with _Guard(self._url, self._options, self._action):
            return self._fh.__exit__(*exc)


def _lost_race(exc: BaseException) -> bool:
    """Whether a conditional write failed because the object changed (412 PreconditionFailed; 409
    ConditionalRequestConflict for two writes at once). s3fs turns the SDK's error into a bare OSError, so the
    chain is searched: the original error is its cause."""
    for e in _chain(exc):
        code = ((getattr(e, "response", None) or {}).get("Error") or {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                any(w in str(e) for w in ("PreconditionFailed", "pre-conditions you specified did not hold",
                                          "ConditionalRequestConflict")):
            return True
    return False


def hash_tag(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()  # noqa: S324  (a change tag, not security)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


_IOV_BATCH = 1000  # parts per os.writev (IOV_MAX is 1024 on Linux)


def _write_parts(fd: int, parts) -> None:
    """Write the parts in order with os.writev: no joined copy of them (a fresh buffer of a few MB costs page
    faults, all of it under the GIL), and the write releases the GIL."""
    for i in range(0, len(parts), _IOV_BATCH):
        batch = parts[i:i + _IOV_BATCH]
        done, want = os.writev(fd, batch), sum(map(len, batch))
        if done < want:  # a short write (rare on a regular file): the rest, part by part
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                rest = rest[os.write(fd, rest):]


def atomic_write_local(path: str | os.PathLike, data, durable: bool = True) -> None:
    """Write ``data`` (bytes, or a list of byte parts written as they are) via a temp file and rename;
    ``durable`` also fsyncs the file and its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (list, tuple)):
                _write_parts(fd, data)
            else:
                fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class Location:
    """A directory-like place (local path or fsspec URL) with the few operations mlspec needs."""

    def __init__(self, url: str, options: Mapping | None = None, base: str | os.PathLike | None = None):
        self.options = dict(options or {})
        if is_local(url):
            p = Path(local_path(url))
            if not p.is_absolute() and base is not None:
                p = Path(base) / p
            self.url = str(p)
            self.local = True
            self._fs = None
        else:
            self.url = url.rstrip("/")
            self.local = False
            self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            if self.local:
                self._fs = fsspec.filesystem("file")
            else:
                try:
                    with _Guard(self.url, self.options, "open"):
                        fs, _ = fsspec.core.url_to_fs(self.url, **self.options)
                except (ImportError, ValueError) as exc:
                    raise MlspecError(f"cannot open storage {self.url}: {exc}",
                                      hint="install the fsspec implementation for this scheme (e.g. s3fs, gcsfs)"
                                      ) from None
                except TypeError as exc:  # an option the filesystem does not take
                    raise MlspecError(f"cannot open storage {self.url}: {exc}",
                                      hint="check storage.options against the filesystem's documentation"
                                      ) from None
                self._fs = _GuardedFS(fs, self)
        return self._fs

    def _guard(self, name: str, action: str) -> _Guard:
        return _Guard(self.join(name) if name else self.url, self.options, action)

    def join(self, *parts: str) -> str:
        if self.local:
            return str(Path(self.url, *parts))
        return "/".join([self.url, *parts])

    def child(self, *parts: str) -> "Location":
        loc = Location.__new__(Location)
        loc.options, loc.local, loc._fs = self.options, self.local, self._fs
        loc.url = self.join(*parts)
        return loc

    def read_bytes(self, name: str) -> bytes | None:
        path = self.join(name)
        if self.local:
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except FileNotFoundError:
                return None
        try:
            # one GET of the object as it is now: open() then read() checks the ETag it saw first and fails
            # with FileExpired when a writer replaced the object in between (a lock renewed meanwhile)
            with self._guard(name, "read"):
                return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def write_bytes(self, name: str, data: bytes, durable: bool = True) -> None:
        path = self.join(name)
        if self.local:
            atomic_write_local(path, data, durable)
        else:
            with self._guard(name, "write"), self.fs.open(path, "wb") as fh:  # one PUT: atomic on object stores
                fh.write(data)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create ``name`` only if absent; False when it already exists."""
        path = self.join(name)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        try:
            with self._guard(name, "write"):
                try:
                    with self.fs._fs.open(path, "xb") as fh:  # conditional create (If-None-Match: *) on s3fs
                        fh.write(data)
                    return True
                except (FileExistsError, OSError) as exc:
                    if isinstance(exc, FileExistsError) or "PreconditionFailed" in str(exc) or "412" in str(exc):
                        return False
                    raise
        except FileExistsError:
            return False

    # --- compare-and-swap, for the lease of a lock on an object store (mlspec.lock) ----------------------
    def _s3(self):
        """The s3fs filesystem under this location, or None when it is not S3 (or S3-compatible)."""
        if self.local:
            return None
        fs = self.fs._fs
        return fs if type(fs).__name__ == "S3FileSystem" else None

    def read_tagged(self, name: str) -> tuple[bytes | None, str | None]:
        """``name``'s bytes and a tag that changes with every write (the ETag on S3), read in one request;
        (None, None) when it does not exist."""
        s3 = self._s3()
        if s3 is None:
            data = self.read_bytes(name)
            return data, (None if data is None else hash_tag(data))
        from fsspec.asyn import sync

        bucket, key, _ = s3.split_path(self.join(name))

        async def get():
            resp = await s3._call_s3("get_object", Bucket=bucket, Key=key)
            try:
                return await resp["Body"].read(), resp.get("ETag")
            finally:
                resp["Body"].close()

        try:
            with self._guard(name, "read"):
                return sync(s3.loop, get)
        except FileNotFoundError:
            return None, None

    def replace_if_match(self, name: str, data: bytes, tag: str) -> str | None:
        """Write ``name`` only if it still has ``tag`` (S3: a conditional PUT, If-Match); the new tag, or None
        when someone else wrote it first. Stores without conditional writes compare and write in two steps."""
        s3 = self._s3()
        if s3 is None:
            _, cur = self.read_tagged(name)
            if cur != tag:
                return None
            self.write_bytes(name, data)
            return hash_tag(data)
        bucket, key, _ = s3.split_path(self.join(name))
        try:
            with self._guard(name, "write"):
                try:
                    resp = s3.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=tag)
                except (OSError, ValueError) as exc:
                    if _lost_race(exc):
                        return None
                    raise
        except FileNotFoundError:
            return None
        return resp.get("ETag") or ""

    def delete(self, name: str) -> None:
        path = self.join(name)
        if self.local:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            try:
                with self._guard(name, "delete"):
                    self.fs.rm(path)
            except FileNotFoundError:
                pass

    def exists(self, name: str) -> bool:
        path = self.join(name)
        if self.local:
            return os.path.exists(path)
        with self._guard(name, "read"):
            return self.fs.exists(path)

    def list(self, prefix: str = "") -> list[str]:
        """Names (relative) of files directly under ``prefix``."""
        path = self.join(prefix) if prefix else self.url
        if self.local:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        try:
            with self._guard(prefix, "list"):
                return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
