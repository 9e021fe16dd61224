"""The repository lorakit works in: kernel-metadata.json, the kernel script and the submissions folder."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorakit.errors import NotFound, UsageError

METADATA_FILE = "kernel-metadata.json"
VALID_LANGUAGES = ("python", "r", "rmarkdown")
VALID_KERNEL_TYPES = ("script", "notebook")
BOOLEAN_KEYS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
LIST_KEYS = ("dataset_sources", "competition_sources", "kernel_sources", "model_sources", "keywords")
_PLACEHOLDER_OWNER = re.compile(r"(?i)^(<.*>|\{.*\}|.*your.*|.*username.*|.*placeholder.*|owner|user|me|xxx+)$")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_COMPETITION = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class KernelRef:
    """A Kaggle kernel, ``owner/slug``."""

    owner: str
    slug: str

    @classmethod
    def parse(cls, text: str) -> "KernelRef":
        parts = (text or "").strip().split("/")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise UsageError(f"kernel id must look like 'owner/slug', got {text!r}")
        owner, slug = parts
        if not _SLUG.match(slug) or len(slug) < 5:
            raise UsageError(f"kernel slug {slug!r} must be 5+ characters of letters, digits, '-' or '_'")
        if not _SLUG.match(owner) and not _PLACEHOLDER_OWNER.match(owner):
            raise UsageError(f"kernel owner {owner!r} is not a valid Kaggle username")
        return cls(owner, slug)

    @classmethod
    def parse_or_none(cls, text: str) -> Optional["KernelRef"]:
        """``parse``, or None for text that is not a kernel id (a ledger cell written by hand, say)."""
        try:
            return cls.parse(text)
        except UsageError:
            return None

    @property
    def is_placeholder(self) -> bool:
        return bool(_PLACEHOLDER_OWNER.match(self.owner))

    def with_owner(self, owner: str) -> "KernelRef":
        return KernelRef(owner, self.slug)

    @property
    def url(self) -> str:
        return f"https://www.kaggle.com/code/{self.owner}/{self.slug}"

    def __str__(self) -> str:
        return f"{self.owner}/{self.slug}"

    def same_as(self, other: "KernelRef") -> bool:
        """The same kernel: equal, or the same slug where one owner is a placeholder ("your username")."""
        return self.slug == other.slug and (self.owner == other.owner or self.is_placeholder or other.is_placeholder)


@dataclass(frozen=True)
class DatasetRef:
    """A Kaggle dataset, ``owner/slug``; a kernel that attaches it finds it under ``/kaggle/input/<slug>``."""

    owner: str
    slug: str

    @property
    def mount(self) -> str:
        return f"/kaggle/input/{self.slug}"

    @property
    def url(self) -> str:
        return f"https://www.kaggle.com/datasets/{self.owner}/{self.slug}"

    def __str__(self) -> str:
        return f"{self.owner}/{self.slug}"


DATASET_SLUG_MAX = 50  # Kaggle's limit


def adapter_dataset_ref(kernel: KernelRef, version: int) -> DatasetRef:
    """The private dataset that carries version ``version``'s adapter: one per version, so that its name
    says which adapter it holds (``<kernel-slug>-v<N>-adapter``, within Kaggle's 6-50 lowercase characters)."""
    suffix = f"-v{int(version)}-adapter"
    stem = re.sub(r"[^a-z0-9-]", "-", kernel.slug.lower())[: DATASET_SLUG_MAX - len(suffix)].strip("-")
    return DatasetRef(kernel.owner, stem + suffix)


def adapter_version_of(mount: str) -> Optional[int]:
    """The version whose adapter dataset (adapter_dataset_ref) is mounted at ``mount``; None for another path."""
    match = re.search(r"-v(\d+)-adapter/?$", mount or "")
    return int(match.group(1)) if match else None


def slugify_title(title: str) -> str:
    """Kaggle's title -> slug rule (close enough to warn on a mismatch, as `kaggle kernels push` does)."""
    text = re.sub(r"[^\w\s-]", "", title.lower())
    return re.sub(r"[-\s_]+", "-", text).strip("-")


def metadata_validate(meta: dict, root: Path) -> list[str]:
    """Check kernel-metadata.json the way `kaggle kernels push` does. Returns warnings; raises on errors."""
    warnings: list[str] = []
    if not isinstance(meta, dict):
        raise UsageError(f"{METADATA_FILE} must hold a JSON object")
    slug = meta.get("id")
    if not slug and not meta.get("id_no"):
        raise UsageError(f"{METADATA_FILE}: 'id' (owner/slug) must be set")
    ref = KernelRef.parse(str(slug)) if slug else None
    title = meta.get("title")
    if title is not None and (not isinstance(title, str) or len(title) < 5):
        raise UsageError(f"{METADATA_FILE}: 'title' must be a string of at least five characters")
    if ref and title and slugify_title(title) != ref.slug.lower():
        warnings.append(
            f"{METADATA_FILE}: title {title!r} does not resolve to the slug {ref.slug!r}; Kaggle may create a different kernel"
        )
    code_file = meta.get("code_file")
    if not code_file or not isinstance(code_file, str):
        raise UsageError(f"{METADATA_FILE}: 'code_file' must name the kernel script")
    if not (root / code_file).is_file():
        raise UsageError(f"{METADATA_FILE}: code_file {code_file!r} does not exist")
    if meta.get("language") not in VALID_LANGUAGES:
        raise UsageError(f"{METADATA_FILE}: 'language' must be one of {', '.join(VALID_LANGUAGES)}")
    if meta.get("kernel_type") not in VALID_KERNEL_TYPES:
        raise UsageError(f"{METADATA_FILE}: 'kernel_type' must be one of {', '.join(VALID_KERNEL_TYPES)}")
    for key in BOOLEAN_KEYS:
        if key in meta:
            value = meta[key]
            if isinstance(value, str) and value.lower() in ("true", "false"):
                continue
            if not isinstance(value, bool):
                raise UsageError(f"{METADATA_FILE}: {key!r} must be true or false, got {value!r}")
    for key in LIST_KEYS:
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key])):
            raise UsageError(f"{METADATA_FILE}: {key!r} must be a list of strings")
    for source in meta.get("kernel_sources", []) or []:
        KernelRef.parse(source)
    for source in meta.get("dataset_sources", []) or []:
        if source.count("/") != 1:
            raise UsageError(f"{METADATA_FILE}: dataset source {source!r} must look like 'owner/dataset'")
    pinning = meta.get("docker_image_pinning_type")
    if pinning is not None and pinning not in ("original", "latest"):
        raise UsageError(f"{METADATA_FILE}: 'docker_image_pinning_type' must be original or latest")
    return warnings


@dataclass(frozen=True)
class Project:
    root: Path
    metadata: dict = field(hash=False, compare=False)
    kernel: KernelRef
    competition: str
    warnings: tuple = ()
    home: Optional[KernelRef] = None  # the metadata's own kernel (--kernel may name another)

    @property
    def metadata_path(self) -> Path:
        return self.root / METADATA_FILE

    @property
    def script_path(self) -> Path:
        return self.root / self.metadata["code_file"]

    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    @property
    def ledger_path(self) -> Path:
        return self.submissions_dir / "ledger.csv"

    def version_dir(self, version: int, kernel: Optional[KernelRef] = None) -> Path:
        """submissions/v<N> for the metadata's kernel, submissions/<slug>/v<N> for another (--kernel)."""
        kernel = kernel or self.kernel
        if self.home is None or kernel.same_as(self.home):
            return self.submissions_dir / f"v{int(version)}"
        return self.submissions_dir / kernel.slug / f"v{int(version)}"


def repo_found(start: Optional[os.PathLike] = None) -> Optional[Path]:
    """The nearest folder at or above ``start`` (default: cwd) that holds kernel-metadata.json, if any."""
    here = Path(start or os.getcwd()).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / METADATA_FILE).is_file()), None)


def repo_find(start: Optional[os.PathLike] = None) -> Path:
    root = repo_found(start)
    if root is None:
        here = Path(start or os.getcwd()).resolve()
        raise NotFound(f"no {METADATA_FILE} found in {here} or any folder above it; run lorakit inside the repository")
    return root


def project_load(start=None, kernel: Optional[str] = None, competition: Optional[str] = None) -> Project:
    root = repo_find(start)
    path = root / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}")
    home = meta.get("id")
    if kernel:
        meta = dict(meta, id=kernel)
    warnings = metadata_validate(meta, root)
    ref = KernelRef.parse(str(meta["id"]))
    comp = competition
    if not comp:
        sources = meta.get("competition_sources") or []
        comp = sources[0] if sources else ""
    if not comp:
        raise UsageError(f"no competition: add it to competition_sources in {METADATA_FILE} or pass --competition")
    if not _COMPETITION.match(comp):
        raise UsageError(f"competition slug {comp!r} must be lowercase letters, digits and '-'")
    home_ref = ref
    if kernel:
        with contextlib.suppress(UsageError):
            home_ref = KernelRef.parse(str(home))
    return Project(root=root, metadata=meta, kernel=ref, competition=comp, warnings=tuple(warnings), home=home_ref)


def script_compile_check(script: Path) -> None:
    try:
        source = Path(script).read_text(encoding="utf-8")
        compile(source, str(script), "exec")
    except SyntaxError as exc:
        raise UsageError(f"{Path(script).name} does not compile: line {exc.lineno}: {exc.msg}")
    except OSError as exc:
        raise UsageError(f"cannot read {script}: {exc.strerror}")


def git_state(root: Path) -> tuple[str, Optional[bool]]:
    """(commit, dirty) of the repository, ('', None) when git or a commit is unavailable."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20
        )
        status = subprocess.run(
            # The ledger and the pulled outputs change with every command: they do not make the code dirty.
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)submissions"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return "", None
    sha = commit.stdout.strip() if commit.returncode == 0 else ""
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return sha, dirty
