"""Typed errors of `gptoss pull`, and the one map from huggingface_hub / httpx2 / OS failures onto them."""

from __future__ import annotations

from converters.errors import BadInputError, GptossError, OutputError, RunFailure


class HubAccessError(BadInputError):
    """The repo or revision is missing, gated, or the token is refused (exit 2)."""

    what = "cannot access repo"


class UnsafeFileName(BadInputError):
    """A repo file name that would escape the target folder."""

    what = "unsafe file name"


class NotEnoughSpace(OutputError):
    """The download does not fit on the disk."""

    what = "not enough disk space"


class HubUnavailable(RunFailure):
    """No network, a timeout, or a server error (exit 1)."""

    what = "download failed"


class HubDataError(RunFailure):
    """The hub sent a hash, id or commit that is not the hex form the hub uses (exit 1)."""

    what = "refusing repo"


class ChecksumMismatch(RunFailure):
    """A downloaded file does not match the hub's sha256, twice."""

    what = "checksum mismatch"


def translate(exc: BaseException, repo_id: str, revision: str | None, token: str | None) -> GptossError:
    """Turn a huggingface_hub / httpx2 / OS exception into one typed error with a next step."""
    import httpx2
    from huggingface_hub import errors as he

    from gptoss_cli.hub.client import shown_endpoint as endpoint  # hub imports this module at load time

    if isinstance(exc, GptossError):
        return exc
    target = repo_id if revision in (None, "main") else f"{repo_id}@{revision}"
    login = "check that your token is valid and has read access" if token else "set HF_TOKEN or pass --token"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, he.GatedRepoError):
        return HubAccessError(target, "the repo is gated and this account has not been granted access",
                              f"Accept its terms at {endpoint()}/{repo_id}, then {login}")
    if isinstance(exc, he.RevisionNotFoundError):
        return HubAccessError(target, f"revision {revision!r} does not exist", "Pass a branch, tag or commit sha")
    if isinstance(exc, he.RepositoryNotFoundError):
        return HubAccessError(target, "repo not found, or private and not readable with this token",
                              f"Check the repo id; for a private repo {login}")
    if isinstance(exc, he.OfflineModeIsEnabled):
        return BadInputError(target, "HF_HUB_OFFLINE is set and the files are not all downloaded",
                             "Unset HF_HUB_OFFLINE to download them")
    if isinstance(exc, he.HfHubHTTPError) and status is not None and not from_hub(exc):
        return HubUnavailable(target, f"the download host answered HTTP {status}",
                              "Rerun to resume; it fetches a fresh download link")
    if isinstance(exc, he.HfHubHTTPError) and status in (401, 403):
        return HubAccessError(target, f"the hub refused access (HTTP {status})", login[0].upper() + login[1:])
    if isinstance(exc, he.HfHubHTTPError):
        return HubUnavailable(target, f"the hub answered HTTP {status}",
                              "Try again later; a rerun resumes where this one stopped")
    if isinstance(exc, he.LocalEntryNotFoundError) and exc.__cause__ is not None:
        return translate(exc.__cause__, repo_id, revision, token)
    if isinstance(exc, (httpx2.TransportError, he.LocalEntryNotFoundError)):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return HubUnavailable(target, f"cannot reach {endpoint()} ({_scrub(first, token)})",
                              "Check your network or HF_ENDPOINT; a rerun resumes where this one stopped")
    if isinstance(exc, he.HFValidationError):
        return BadInputError(repo_id, "not a valid repo id", "Use 20b, 120b or an org/name repo id")
    if isinstance(exc, OSError) and exc.errno == 28:
        return NotEnoughSpace(exc.filename or target, "the disk filled up during the download",
                              "Free some space and rerun; finished bytes are kept")
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return HubUnavailable(target, _scrub(f"{type(exc).__name__}: {first}", token),
                          "Rerun to resume; set GPTOSS_DEBUG=1 for details")


def from_hub(exc: BaseException) -> bool:
    """Whether an HTTP error came from the hub's origin (not the download host it redirects to)."""
    from gptoss_cli.hub.client import endpoint, same_origin
    try:
        return same_origin(str(exc.response.request.url), endpoint())  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return True


def _scrub(text: str, token: str | None) -> str:
    """Text without the token, and URLs without user:password@ credentials."""
    import re
    text = re.sub(r"(?<=://)[^/@\s]*@", "", text)
    return text.replace(token, "***") if token else text
